//! Outbound HTTPS: certificate verification, HTTP/2 by ALPN and connection
//! reuse, against a TLS server on loopback with a certificate from a private
//! authority that the test makes (and that the host trusts only when told).

use crate::common;

use action_host::{ActionSettings, CallContext, Grant, Host, HostConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct TlsServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS server for `localhost` that answers every request with the HTTP
/// version it arrived in, and counts the connections it accepts.
async fn tls_server() -> TlsServer {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(version),
                        )))
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    TlsServer {
        port,
        connections,
        ca_pem: ca.pem(),
        task,
    }
}

async fn fixture_host(server: &TlsServer, trust: bool) -> Host {
    let config = HostConfig {
        tls_roots_pem: trust.then(|| server.ca_pem.clone()),
        ..HostConfig::default()
    };
    let host = Host::new(config).unwrap();
    // The name is granted; loopback is reachable because an IP grant names it.
    let grants = [
        format!("GET https://localhost:{}", server.port),
        format!("https://127.0.0.1:{}", server.port),
    ];
    let settings = ActionSettings {
        grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
        ..ActionSettings::default()
    };
    host.load_with("fixture", common::plugin_bytes("fixture"), settings)
        .await
        .unwrap();
    host
}

#[tokio::test]
async fn https_speaks_http2_when_offered_and_reuses_the_connection() {
    let server = tls_server().await;
    let host = fixture_host(&server, true).await;
    let input = json!({"behave": "http", "url": format!("https://localhost:{}/orders", server.port), "count": 3});
    let done = host
        .invoke(
            "fixture",
            CallContext::default(),
            input.as_object().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    assert_eq!(done.attributes["sent"], 3);
    assert_eq!(done.attributes["body"], "HTTP/2.0");
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        1,
        "three requests should share one connection"
    );
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_authority_is_refused() {
    let server = tls_server().await;
    let host = fixture_host(&server, false).await;
    let input = json!({"behave": "http", "url": format!("https://localhost:{}/", server.port)});
    let done = host
        .invoke(
            "fixture",
            CallContext::default(),
            input.as_object().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        done.attributes["error"], "transport",
        "{:?}",
        done.attributes
    );
    let detail = done.attributes["detail"].as_str().unwrap();
    assert!(detail.to_lowercase().contains("certificate"), "{detail}");
}

#[test]
fn roots_that_are_not_pem_certificates_are_refused() {
    let config = HostConfig {
        tls_roots_pem: Some("not a certificate".into()),
        ..HostConfig::default()
    };
    let err = Host::new(config).err().expect("refused").to_string();
    assert!(err.contains("hold no PEM certificate"), "{err}");
}
