use rill::prelude::*;

#[timer(every = "1s")]
fn not_async() -> rill::Result<()> {
    Ok(())
}

#[timer(every = "1s", tables(missing = "t"))]
async fn bad_parameter(n: u32) -> rill::Result<()> {
    let _ = n;
    Ok(())
}

#[timer(every = "1s")]
async fn wrong_return(producer: Producer) -> u32 {
    let _ = producer;
    1
}

fn main() {}
