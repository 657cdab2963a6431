//! A tiny program with crates.io dependencies (a derive macro, build scripts that probe rustc),
//! compiled crate by crate inside BuildKit by rustcbuildx.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Greeting {
    to: String,
    times: u32,
}

fn main() -> anyhow::Result<()> {
    let greeting = Greeting { to: "BuildKit".into(), times: 3 };
    let json = serde_json::to_string(&greeting)?;
    let back: Greeting = serde_json::from_str(&json)?;
    anyhow::ensure!(back == greeting, "round trip changed the value");
    let mut buf = itoa::Buffer::new();
    println!("hello from a binary built by rustcbuildx: {json} ({} times)", buf.format(back.times));
    Ok(())
}
