//! The client in a few calls. Start a playground first (`cargo run --release -- playground`),
//! then: `cargo run --release -p regatta-client --example basic [PD_ADDR]`.

use regatta_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pd = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::connect(&[pd]).await?;

    let index = client.put(b"fruit/apple", b"red").await?;
    println!("put fruit/apple = red (committed at log index {index})");
    client.put(b"fruit/banana", b"yellow").await?;

    // A read returns the value and its version: the log index of the key's last write.
    if let Some(apple) = client.get(b"fruit/apple").await? {
        println!(
            "get fruit/apple -> {} (version {})",
            String::from_utf8_lossy(&apple.value),
            apple.version
        );
    }

    // Compare-and-swap: only succeeds if the current value is what we expect.
    let swap = client.cas(b"fruit/apple", Some(b"red"), b"green").await?;
    println!("cas red -> green: succeeded = {}", swap.succeeded);
    let again = client.cas(b"fruit/apple", Some(b"red"), b"blue").await?;
    println!(
        "cas red -> blue: succeeded = {}, current = {:?}",
        again.succeeded,
        again.previous.map(String::from_utf8)
    );

    for pair in client.scan(b"fruit/", b"fruit0", 100).await? {
        println!(
            "scan: {} = {}",
            String::from_utf8_lossy(&pair.key),
            String::from_utf8_lossy(&pair.value)
        );
    }
    let existed = client.delete(b"fruit/banana").await?;
    println!("delete fruit/banana: existed = {existed}");

    // Batches: one request per region the keys fall in, sent in parallel.
    let basket = [
        (b"fruit/cherry".to_vec(), b"dark red".to_vec()),
        (b"fruit/kiwi".to_vec(), b"brown".to_vec()),
    ];
    client.batch_put(&basket).await?;
    let keys = [b"fruit/cherry".to_vec(), b"fruit/banana".to_vec()];
    for (key, value) in keys.iter().zip(client.batch_get(&keys).await?) {
        println!(
            "batch_get {} -> {:?}",
            String::from_utf8_lossy(key),
            value.map(|v| String::from_utf8(v.value))
        );
    }
    Ok(())
}
