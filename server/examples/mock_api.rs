//! A mock of the APIs the example actions call, on 127.0.0.1:8099, printing
//! every request it receives (including the Authorization header, so you can
//! see the host filled in the secret). For trying the example actions that call
//! out (order-lookup, lead-capture, weather-js, membership-js, news-py); see the README.
//!
//! `cargo run --release --example mock_api`

#[path = "../../tests/all/common/mock.rs"]
mod mock;

#[tokio::main]
async fn main() {
    let mock = mock::Mock::start_on("127.0.0.1:8099").await;
    println!(
        "mock API on http://127.0.0.1:{}; Ctrl-C stops it",
        mock.port
    );
    println!("  GET  /api/users/{{id}}/orders/last  -> an order (404 for `nobody`)");
    println!("  POST /crm/leads                   -> 201 {{\"id\":\"lead-77\"}}");
    println!("  GET  /weather/current?city=C      -> the weather (404 for `Atlantis`)");
    println!("  GET  /members/{{id}}                -> a gold member (404 for `nobody`)");
    println!("  GET  /news/headlines?topic=T      -> four headlines");
    let mut shown = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for request in mock.received().into_iter().skip(shown) {
            shown += 1;
            let auth = request.header("authorization").unwrap_or("-");
            let body = String::from_utf8_lossy(&request.body);
            println!(
                "{} {}  authorization: {auth}  body: {body}",
                request.method, request.path
            );
        }
    }
}
