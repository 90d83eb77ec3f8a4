//! Embeds action-host: loads the greeting action and invokes it twice.
//!
//! Build the plugins first (`cargo xtask plugins`), then:
//! `cargo run --release --example embed [path/to/greeting.wasm]`

use action_host::{CallContext, Host, HostConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "plugins/target/wasm32-wasip2/release/greeting.wasm".into());
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;

    let host = Host::new(HostConfig::default())?;
    let manifest = host.load("greeting", &bytes).await?;
    println!(
        "loaded {} {}: {}",
        manifest.name, manifest.version, manifest.description
    );

    for (name, zone) in [
        ("Ada Lovelace", "Europe/London"),
        ("Grace Hopper", "America/New_York"),
    ] {
        let context = CallContext {
            timezone: Some(zone.into()),
            ..CallContext::default()
        };
        let input = json!({ "first_name": name, "is_member": true });
        match host
            .invoke("greeting", context, input.as_object().unwrap())
            .await
        {
            Ok(done) => println!(
                "{zone}: {} ({:.3} ms)",
                done.attributes["greeting"],
                done.duration.as_secs_f64() * 1e3
            ),
            Err(error) => println!("{zone}: {}: {}", error.kind, error.message),
        }
    }
    Ok(())
}
