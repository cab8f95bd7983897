//! The agent's side of request/reply (Faust's `agent.ask`): `Stream::requests` yields each
//! record as a [`Request`], which the agent answers with [`Request::reply`]. The reply is a
//! send of the agent like any other: it joins the record's commit step, so under exactly-once
//! it is committed with the record's offset, once, or not at all. A record that was not asked
//! (a `cast`, a plain send) has no one to reply to: replying to it does nothing.

use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;

use crate::base::error::{Error, Result};
use crate::base::message::{Headers, OutRecord, RawRecord, header, now_millis};
use crate::base::record::Record;
use crate::ops::stream::Stream;

/// A record of a stream, with where its reply goes when someone asked it.
#[derive(Debug, Clone)]
pub struct Request<T> {
    value: T,
    reply_to: Option<(Arc<str>, Vec<u8>)>,
}

impl<T> Request<T> {
    /// The record.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The record, without its reply address.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Whether someone waits for a reply (an `ask`, or a send with `reply_to`).
    pub fn wants_reply(&self) -> bool {
        self.reply_to.is_some()
    }

    /// Sends `answer` (as JSON) to whoever asked, in this record's commit step; nothing when
    /// no one did.
    pub async fn reply<R: Serialize>(&self, answer: &R) -> Result<()> {
        let Some((topic, correlation)) = &self.reply_to else {
            return Ok(());
        };
        let value = serde_json::to_vec(answer).map_err(|e| Error::Request {
            topic: topic.to_string(),
            message: format!("the reply does not encode as JSON: {e}"),
        })?;
        send_reply(topic, correlation, Some(value), Headers::default()).await
    }

    /// Tells whoever asked that the request failed, with `reason` (their `ask` returns an
    /// error carrying it); nothing when no one asked.
    pub async fn fail(&self, reason: impl Into<String>) -> Result<()> {
        let Some((topic, correlation)) = &self.reply_to else {
            return Ok(());
        };
        let mut headers = Headers::default();
        headers.insert(header::REPLY_ERROR, reason.into().into_bytes());
        send_reply(topic, correlation, None, headers).await
    }
}

impl<T> Deref for Request<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

async fn send_reply(
    topic: &Arc<str>,
    correlation: &[u8],
    value: Option<Vec<u8>>,
    mut headers: Headers,
) -> Result<()> {
    headers.insert(header::CORRELATION_ID, correlation.to_vec());
    let record = OutRecord {
        topic: topic.clone(),
        partition: None,
        key: Some(correlation.to_vec()),
        value,
        timestamp: now_millis(),
        headers,
    };
    crate::instance::context::send("Request::reply", record, None).await?;
    crate::instance::context::commit_soon();
    Ok(())
}

/// Where a fetched record's reply goes, from its headers.
fn reply_to(raw: &RawRecord) -> Option<(Arc<str>, Vec<u8>)> {
    let topic = std::str::from_utf8(raw.headers.get(header::REPLY_TO)?).ok()?;
    let correlation = raw.headers.get(header::CORRELATION_ID)?;
    Some((Arc::from(topic), correlation.to_vec()))
}

impl<T: Record> Stream<T> {
    /// Each record as a [`Request`] the agent can reply to (see the module docs).
    pub fn requests(self) -> Stream<Request<T>> {
        self.restep(|mut step| {
            Box::new(move |raw: &RawRecord| {
                let value = step(raw)?;
                Some(Request {
                    value,
                    reply_to: reply_to(raw),
                })
            })
        })
    }
}

/// The error an asker gets for a reply carrying `rill.reply_error`.
pub(crate) fn refused(topic: &str, reason: &[u8]) -> Error {
    Error::Request {
        topic: topic.to_owned(),
        message: format!(
            "the agent refused the request: {}",
            String::from_utf8_lossy(reason)
        ),
    }
}
