//! `mock-upstream [--listen ADDR] [--api-key KEY]`: the project's OpenAI-compatible mock
//! server, for the end-to-end suite and the benchmark. Prints `listening on http://ADDR`.

use clap::Parser;
use gateway::testkit::mock_upstream::MockUpstream;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mock = MockUpstream::start(args.listen, args.api_key).await?;
    println!("listening on http://{}", mock.addr);
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
