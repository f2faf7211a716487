//! The five-minute tour: a customer asks for help, an agent joins, they
//! chat, the agent closes the case. Run a broker first (`cargo run
//! --release`), then `cargo run --example tour [ws://127.0.0.1:8080/v1/ws]`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends one message and prints it.
async fn send(ws: &mut Ws, who: &str, v: Value) -> Result<(), Box<dyn std::error::Error>> {
    println!("{who} -> {v}");
    ws.send(Message::text(v.to_string())).await?;
    Ok(())
}

/// Prints what arrives until a message of type `ty`, which it returns.
async fn until(ws: &mut Ws, who: &str, ty: &str) -> Result<Value, Box<dyn std::error::Error>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .ok_or("connection closed")??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t)?;
            println!("{who} <- {v}");
            if v["type"] == ty {
                return Ok(v);
            }
            if v["type"] == "error" {
                return Err(format!("{who} got an error: {v}").into());
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/v1/ws".into());

    println!("== the customer's app asks for help with the demo module key");
    let (mut customer, _) = tokio_tungstenite::connect_async(&url).await?;
    send(
        &mut customer,
        "customer",
        json!({"type": "hello", "role": "customer"}),
    )
    .await?;
    until(&mut customer, "customer", "welcome").await?;
    send(
        &mut customer,
        "customer",
        json!({"type": "request_help", "id": 1, "module": "demo-quicksupport", "name": "Ana", "description": "Printer down"}),
    )
    .await?;
    let joined = until(&mut customer, "customer", "joined").await?;
    let code = joined["code"].as_str().ok_or("no code")?.to_string();
    println!("\n== the session code is {code}; bob (an agent) joins it");

    let (mut agent, _) = tokio_tungstenite::connect_async(&url).await?;
    send(
        &mut agent,
        "bob",
        json!({"type": "hello", "role": "agent", "token": "demo-bob-token"}),
    )
    .await?;
    until(&mut agent, "bob", "welcome").await?;
    send(
        &mut agent,
        "bob",
        json!({"type": "join", "id": 2, "code": code}),
    )
    .await?;
    until(&mut agent, "bob", "joined").await?;
    until(&mut customer, "customer", "status").await?;

    println!("\n== they chat");
    send(
        &mut agent,
        "bob",
        json!({"type": "chat", "id": 3, "code": code, "text": "Hi Ana, I'm on it."}),
    )
    .await?;
    until(&mut customer, "customer", "chat").await?;
    send(
        &mut customer,
        "customer",
        json!({"type": "chat", "id": 4, "text": "Thank you!"}),
    )
    .await?;
    until(&mut agent, "bob", "chat").await?;

    println!("\n== bob closes the case; the customer is told and disconnected");
    send(
        &mut agent,
        "bob",
        json!({"type": "close", "id": 5, "code": code}),
    )
    .await?;
    until(&mut agent, "bob", "case").await?;
    until(&mut customer, "customer", "ended").await?;
    println!(
        "\nDone. The case is in `GET /v1/cases/{code}` (Authorization: Bearer demo-alice-token)."
    );
    Ok(())
}
