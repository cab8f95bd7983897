//! Request/reply between agents on the test harness: `ask` gets the agent's reply, many asks
//! in flight each get their own, a refusal and a missing reply end with errors that say so,
//! `cast` expects nothing, and an agent asks another one through its `Requests` parameter.

mod common;

use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct Add {
    a: i64,
    b: i64,
}

#[record]
#[derive(Debug, Clone)]
struct Number {
    n: i64,
}

#[record]
#[derive(Debug, Clone)]
struct Doubled {
    n: i64,
    doubled_sum: i64,
}

#[agent(topic = "adds", sink = "casts")]
async fn adder(adds: Stream<Add>, casts: Sink<Add>) -> rill::Result<()> {
    let mut adds = adds.requests();
    while let Some(add) = adds.next().await {
        if add.a < 0 {
            add.fail(format!("{} is negative", add.a)).await?;
        } else if add.wants_reply() {
            add.reply(&(add.a + add.b)).await?;
        } else {
            casts.send(add.value()).await?;
        }
    }
    Ok(())
}

/// Asks `adder` from inside an agent, then answers its own asker.
#[agent(topic = "doubles")]
async fn doubler(numbers: Stream<Number>, requests: Requests) -> rill::Result<()> {
    let mut numbers = numbers.requests();
    while let Some(number) = numbers.next().await {
        let n = number.n;
        let sum: i64 = requests
            .ask("adds", &Add { a: n, b: n })
            .timeout(Duration::from_secs(5))
            .await?;
        number
            .reply(&Doubled {
                n,
                doubled_sum: sum,
            })
            .await?;
    }
    Ok(())
}

#[agent(topic = "silent")]
async fn silent(adds: Stream<Add>) -> rill::Result<()> {
    let mut adds = adds.requests();
    while adds.next().await.is_some() {}
    Ok(())
}

#[tokio::test]
async fn ask_gets_the_agents_reply_and_concurrent_asks_get_their_own() -> rill::Result<()> {
    let app = App::new("requests").agents([adder::agent()]).test().await?;
    let requests = app.requests();
    let three: i64 = requests
        .ask("adds", &Add { a: 1, b: 2 })
        .timeout(Duration::from_secs(5))
        .await?;
    assert_eq!(three, 3);
    let asks = (0..100).map(|i| {
        let requests = requests.clone();
        async move { requests.ask::<i64, _>("adds", &Add { a: i, b: 1000 }).await }
    });
    let sums = futures::future::try_join_all(asks).await?;
    assert_eq!(sums, (0..100).map(|i| i + 1000).collect::<Vec<_>>());
    assert_eq!(requests.waiting(), 0);
    // A cast is processed like any record, with no reply.
    requests.cast("adds", &Add { a: 7, b: 8 }).await?;
    let cast: Vec<Add> = app.expect("casts", 1).await?;
    assert_eq!((cast[0].a, cast[0].b), (7, 8));
    app.stop().await
}

#[tokio::test]
async fn a_refusal_and_a_missing_reply_are_errors_naming_the_topic() -> rill::Result<()> {
    let app = App::new("requests_err")
        .agents([adder::agent(), silent::agent()])
        .test()
        .await?;
    let requests = app.requests();
    let refused = requests
        .ask::<i64, _>("adds", &Add { a: -1, b: 2 })
        .timeout(Duration::from_secs(5))
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        refused.contains("`adds`") && refused.contains("-1 is negative"),
        "{refused}"
    );
    let unanswered = requests
        .ask::<i64, _>("silent", &Add { a: 1, b: 2 })
        .timeout(Duration::from_millis(300))
        .await
        .expect_err("no reply")
        .to_string();
    assert!(
        unanswered.contains("`silent`") && unanswered.contains("no reply within"),
        "{unanswered}"
    );
    assert_eq!(requests.waiting(), 0, "a timed-out ask is forgotten");
    app.stop().await
}

#[tokio::test]
async fn an_agent_asks_another_through_its_requests_parameter() -> rill::Result<()> {
    let app = App::new("requests_chain")
        .agents([adder::agent(), doubler::agent()])
        .test()
        .await?;
    let reply: Doubled = app
        .requests()
        .ask("doubles", &Number { n: 21 })
        .timeout(Duration::from_secs(10))
        .await?;
    assert_eq!((reply.n, reply.doubled_sum), (21, 42));
    app.stop().await
}
