//! Request/reply between agents (Faust's `agent.ask` and `agent.cast`): the `adder` agent
//! answers each request with a sum; a timer asks it every second, and casts a request that
//! wants no answer. Replies travel through the app's reply topic `ask-__replies`.
//!
//! ```text
//! cargo run --example ask
//! cargo run --example ask -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! Requests can be sent from anywhere in the worker: `Worker::requests`, a `Requests`
//! parameter of an agent, a timer's context, `TestApp::requests` in tests.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct Add {
    a: i64,
    b: i64,
}

#[agent(topic = "adds")]
async fn adder(adds: Stream<Add>) -> rill::Result<()> {
    let mut adds = adds.requests();
    while let Some(add) = adds.next().await {
        if add.wants_reply() {
            add.reply(&(add.a + add.b)).await?;
        } else {
            println!("cast: {} + {} (no one waits for the answer)", add.a, add.b);
        }
    }
    Ok(())
}

#[timer(every = "1s")]
async fn ask_adder(cx: TimerContext) -> rill::Result<()> {
    let requests = cx.requests();
    let a = cx.scheduled_ms() / 1000 % 100;
    let sum: i64 = requests
        .ask("adds", &Add { a, b: 1 })
        .timeout(Duration::from_secs(5))
        .await?;
    println!("asked {a} + 1, the adder answered {sum}");
    requests.cast("adds", &Add { a, b: 2 }).await
}

fn main() -> rill::Result<()> {
    App::new("ask").main()
}
