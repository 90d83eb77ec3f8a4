//! A small HTTP/1.1 server on loopback that records what it receives. Tests
//! start one each (it stops when dropped); `examples/mock_api.rs` runs it for
//! trying the example actions by hand.

// Each user of this file needs a different part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The server. Paths: `/big` (2 MiB with a length), `/big-chunked` (2 MiB,
/// chunked), `/slow` (answers after 3 s), `/redirect?to=URL` (302),
/// `/api/users/{id}/orders/last` (an order as JSON; 404 for `nobody`),
/// `/crm/leads` (201 with a lead id), `/compressed` (a gzip body, whatever was
/// asked), `/echo...` (every request header back, in
/// the headers and a chunked body), `/echo-json` (the request headers as JSON), `/slow...` (200 after 3 s), `/weather/current?city=C` (the weather;
/// 404 for `Atlantis`, invalid JSON for `Garbled`), `/members/{id}` (a gold
/// member; 404 for `nobody`), `/news/headlines?topic=T` (four headlines;
/// invalid JSON for `garbled`), anything else: 200 "ok".
pub struct Mock {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    /// Starts on a free loopback port.
    pub async fn start() -> Mock {
        Mock::start_on("127.0.0.1:0").await
    }

    /// Starts on `address`, which should be a loopback address.
    pub async fn start_on(address: &str) -> Mock {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&log)));
            }
        });
        Mock {
            port,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Received>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    log.lock().unwrap().push(Received {
        method,
        path: path.clone(),
        headers,
        body,
    });

    let big = vec![b'x'; 2 << 20];
    let response: Vec<u8> = if path == "/echo-json" {
        let echoed: serde_json::Map<String, serde_json::Value> = log
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
            .collect();
        json_response("200 OK", &serde_json::Value::Object(echoed).to_string())
    } else if path == "/compressed-echo" {
        // An upstream that names its coding after the request's authorization.
        let log = log.lock().unwrap();
        let received = log.last().unwrap();
        let authorization = received.header("authorization").unwrap_or_default();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-encoding: x-{authorization}\r\ncontent-length: 0\r\n\
             connection: close\r\n\r\n"
        )
        .into_bytes()
    } else if path.starts_with("/echo") {
        echo(&log.lock().unwrap().last().unwrap().headers)
    } else if path == "/big" {
        [
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                big.len()
            )
            .into_bytes(),
            big,
        ]
        .concat()
    } else if path == "/big-chunked" {
        let mut out =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
        for chunk in big.chunks(64 << 10) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    } else if path == "/api/users/nobody/orders/last" {
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
    } else if path.starts_with("/api/users/") {
        let order = r#"{"id":"o-1001","status":"shipped","items":[{"sku":"teapot","qty":2}]}"#;
        json_response("200 OK", order)
    } else if path == "/crm/leads" {
        json_response("201 Created", r#"{"id":"lead-77"}"#)
    } else if let Some(query) = path.strip_prefix("/weather/current?city=") {
        match query {
            "Atlantis" => json_response("404 Not Found", r#"{"error":"unknown city"}"#),
            "Garbled" => json_response("200 OK", "<html>not json"),
            city => json_response(
                "200 OK",
                &format!(
                    r#"{{"city":"{city}","condition":"light rain","temperature_c":14.6,"wind_kph":11}}"#
                ),
            ),
        }
    } else if path == "/members/nobody" {
        json_response("404 Not Found", r#"{"error":"not a member"}"#)
    } else if path.starts_with("/members/") {
        json_response("200 OK", r#"{"tier":"gold","since":"2021-04-01"}"#)
    } else if path.starts_with("/news/headlines?topic=garbled") {
        json_response("200 OK", "<html>not json")
    } else if path.starts_with("/news/headlines") {
        json_response(
            "200 OK",
            r#"{"articles":[{"title":"Rain returns to Lisbon","source":"Daily Example"},{"title":"Tea prices steady","source":"Market Example"},{"title":"Robots learn to knit","source":"Tech Example"},{"title":"A fourth story","source":"Daily Example"}]}"#,
        )
    } else if path == "/compressed" {
        // An upstream that compresses whatever the client asked for.
        let body = b"\x1f\x8b\x08\x00 not really gzip";
        [
            format!(
                "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.to_vec(),
        ]
        .concat()
    } else if let Some(to) = path.strip_prefix("/redirect?to=") {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_bytes()
    } else {
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec()
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Every request header back, as an echoing upstream (or a careless error
/// page) would: each as a response header `x-echo-NAME`, and in the body as
/// `NAME: VALUE` lines sent in chunks of 3 bytes, so that a value is split
/// across chunks.
fn echo(headers: &[(String, String)]) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n".to_vec();
    for (name, value) in headers {
        out.extend_from_slice(format!("x-echo-{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let body: String = headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    for chunk in body.as_bytes().chunks(3) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn json_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
