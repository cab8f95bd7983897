//! The asking side of request/reply between agents (Faust's `agent.ask` / `agent.cast`):
//! [`Requests`] sends a record to an agent's topic with a reply address and a correlation id
//! in its headers, and waits for the reply the agent sends with `Request::reply`.
//!
//! Replies travel through the app's reply topic `<app>-__replies`. Each worker reads all of
//! it, from its end when it first asks, through a consumer group of its own (the replies to
//! its requests may come from any worker), and hands each reply to the request waiting for its
//! correlation id; replies to other workers' requests are skipped. Under exactly-once the
//! reader sees only committed replies, so a request an agent processed twice (a crash before
//! its commit) is answered once. A request whose reply does not come within its timeout ends
//! with an error naming the topic; a reply arriving after that is dropped.

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::base::config::OffsetReset;
use crate::base::error::{Error, Result};
use crate::base::message::{RawRecord, encode_out, header};
use crate::base::record::Record;
use crate::base::spec::{Internal, TopicSpec};
use crate::io::transport::{Batch, Control, InstanceTx, Log, Router, Tp};
use crate::ops::request::refused;
use crate::wiring::producer::Producer;
use crate::wiring::registry::Registry;

/// How long an `ask` waits for its reply unless told otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first `ask` waits for the reply reader to be in place.
const READER_READY: Duration = Duration::from_secs(60);

/// The app's reply topic.
pub(crate) fn reply_topic(app_id: &str) -> String {
    format!("{app_id}-__replies")
}

/// A reply: its value bytes, or the agent's refusal.
type Reply = std::result::Result<Vec<u8>, Vec<u8>>;

/// Sends requests to agents and waits for their replies; cheap to clone. From
/// `Worker::requests`, `TestApp::requests`, or an agent's `AgentContext::requests`.
#[derive(Clone)]
pub struct Requests {
    inner: Arc<Inner>,
}

struct Inner {
    app_id: String,
    partitions: i32,
    log: Arc<dyn Log>,
    producer: Producer,
    /// Requests waiting, by correlation id.
    waiting: Mutex<HashMap<Vec<u8>, oneshot::Sender<Reply>>>,
    /// The reply reader, started by the first `ask`.
    reader: tokio::sync::OnceCell<()>,
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    shutdown_timeout: Duration,
}

impl Requests {
    pub(crate) fn new(
        app_id: &str,
        partitions: i32,
        log: Arc<dyn Log>,
        stop: Arc<AtomicBool>,
        registry: Arc<Registry>,
        shutdown_timeout: Duration,
    ) -> Self {
        Requests {
            inner: Arc::new(Inner {
                app_id: app_id.to_owned(),
                partitions,
                producer: Producer::new(log.clone()),
                log,
                waiting: Mutex::new(HashMap::new()),
                reader: tokio::sync::OnceCell::new(),
                stop,
                registry,
                shutdown_timeout,
            }),
        }
    }

    /// Sends `value` to `topic` and waits for the reply of the agent reading it (which answers
    /// with `Request::reply`), decoded as `R`. Await it, or set a timeout first
    /// (`.timeout(Duration::from_secs(5)).await`; 30 s by default).
    pub fn ask<R: DeserializeOwned + Send + 'static, V: Record>(
        &self,
        topic: &str,
        value: &V,
    ) -> Ask<R> {
        // A registry-coded topic this worker only reads (an agent's own) is bound for writing
        // first, as `cast` does; here synchronously, since the record is encoded now.
        let encoded = crate::wiring::schemas::ensure_writable_now::<V>(topic, V::CODEC)
            .and_then(|()| encode_out(topic, V::CODEC, value.key(), value, None));
        Ask {
            requests: self.clone(),
            topic: topic.to_owned(),
            encoded,
            timeout: DEFAULT_TIMEOUT,
            _reply: std::marker::PhantomData,
        }
    }

    /// Sends `value` to `topic` without waiting for anything (Faust's `cast`): the agent
    /// processes it like any record, and replying to it does nothing.
    pub async fn cast<V: Record>(&self, topic: &str, value: &V) -> Result<()> {
        crate::wiring::schemas::ensure_writable::<V>(topic, V::CODEC).await?;
        let record = encode_out(topic, V::CODEC, value.key(), value, None)?;
        self.inner.producer.send_raw(record).await?;
        self.inner.producer.flush().await
    }

    /// Sends `value` to `topic` with its reply going to `reply_to` (another agent's topic, say)
    /// instead of back here; returns the correlation id the reply will carry in its
    /// `rill.correlation_id` header.
    pub async fn send_with_reply_to<V: Record>(
        &self,
        topic: &str,
        value: &V,
        reply_to: &str,
    ) -> Result<Vec<u8>> {
        crate::wiring::schemas::ensure_writable::<V>(topic, V::CODEC).await?;
        let mut record = encode_out(topic, V::CODEC, value.key(), value, None)?;
        let correlation = correlation_id();
        record
            .headers
            .insert(header::REPLY_TO, reply_to.as_bytes().to_vec());
        record
            .headers
            .insert(header::CORRELATION_ID, correlation.clone());
        self.inner.producer.send_raw(record).await?;
        self.inner.producer.flush().await?;
        Ok(correlation)
    }

    /// Requests waiting for their replies now.
    pub fn waiting(&self) -> usize {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    async fn ask_raw(
        &self,
        topic: &str,
        mut record: crate::base::message::OutRecord,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.inner
            .reader
            .get_or_try_init(|| self.inner.start_reader())
            .await?;
        let correlation = correlation_id();
        let reply_to = reply_topic(&self.inner.app_id);
        record
            .headers
            .insert(header::REPLY_TO, reply_to.into_bytes());
        record
            .headers
            .insert(header::CORRELATION_ID, correlation.clone());
        let (tx, rx) = oneshot::channel();
        self.inner.wait_for(&correlation, tx);
        let forget = Forget(&self.inner, &correlation);
        self.inner.producer.send_raw(record).await?;
        self.inner.producer.flush().await?;
        let reply = tokio::time::timeout(timeout, rx).await;
        drop(forget);
        match reply {
            Ok(Ok(Ok(bytes))) => Ok(bytes),
            Ok(Ok(Err(reason))) => Err(refused(topic, &reason)),
            Ok(Err(_)) => Err(Error::Shutdown(
                "the worker stopped before the reply came".into(),
            )),
            Err(_) => Err(Error::Request {
                topic: topic.to_owned(),
                message: format!(
                    "no reply within {timeout:?}; is an agent reading `{topic}` and answering with `Request::reply` (its `Stream::requests`)?"
                ),
            }),
        }
    }
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("app_id", &self.inner.app_id)
            .finish_non_exhaustive()
    }
}

/// Removes a request from the waiting ones when its `ask` ends, however it ends.
struct Forget<'a>(&'a Inner, &'a [u8]);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.1);
    }
}

/// A random correlation id (128 bits, hex).
fn correlation_id() -> Vec<u8> {
    format!("{:032x}", rand::random::<u128>()).into_bytes()
}

impl Inner {
    fn wait_for(&self, correlation: &[u8], tx: oneshot::Sender<Reply>) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(correlation.to_vec(), tx);
    }

    /// Hands a reply to the request waiting for it, if any.
    fn deliver(&self, raw: &RawRecord) {
        let Some(correlation) = raw.headers.get(header::CORRELATION_ID) else {
            return;
        };
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(correlation);
        let Some(waiter) = waiter else {
            return;
        };
        let reply = match raw.headers.get(header::REPLY_ERROR) {
            Some(reason) => Err(reason.to_vec()),
            None => Ok(raw.value.as_deref().unwrap_or_default().to_vec()),
        };
        let _ = waiter.send(reply);
    }

    /// Creates the reply topic and starts reading it from its end, through a group of this
    /// worker's own; returns once every partition's end is known (a reply sent after that
    /// cannot be missed).
    async fn start_reader(self: &Arc<Self>) -> Result<()> {
        let topic = reply_topic(&self.app_id);
        let spec = TopicSpec::internal(&topic, Internal::Replies, None, "request/reply");
        self.log.ensure_topics(&[spec], self.partitions).await?;
        let (data_tx, data) = mpsc::channel(4);
        let (ctrl_tx, ctrl) = mpsc::unbounded_channel();
        let router = Arc::new(Router::new(
            "replies",
            vec![InstanceTx {
                data: data_tx,
                ctrl: ctrl_tx,
            }],
            self.shutdown_timeout,
        ));
        let group = format!("{topic}-{}", String::from_utf8_lossy(&correlation_id()));
        let (_committer, thread) = self.log.start_fetcher(
            &group,
            vec![topic.clone()],
            OffsetReset::Latest,
            router,
            self.stop.clone(),
        )?;
        self.registry.hold_thread(thread);
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(read_replies(self.clone(), data, ctrl, ready_tx));
        match tokio::time::timeout(READER_READY, ready).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::Request {
                topic,
                message: format!(
                    "the reply topic's reader was not in place within {READER_READY:?}"
                ),
            }),
        }
    }
}

/// The reply reader: hands replies to waiting requests; says `ready` once it was assigned the
/// reply topic and reached the end of every partition.
async fn read_replies(
    inner: Arc<Inner>,
    mut data: mpsc::Receiver<Batch>,
    mut ctrl: mpsc::UnboundedReceiver<Control>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    // Control messages and batches travel on separate channels: a partition's end may be
    // reported before its assignment is seen, so both are kept until they meet.
    let mut assigned: Option<HashSet<Tp>> = None;
    let mut caught_up: HashSet<Tp> = HashSet::new();
    loop {
        tokio::select! {
            control = ctrl.recv() => match control {
                Some(Control::Assigned { partitions, .. }) => {
                    assigned = Some(partitions.into_iter().collect());
                }
                Some(Control::Revoked { ack, .. }) => {
                    let _ = ack.send(());
                }
                None => return,
            },
            batch = data.recv() => {
                let Some(batch) = batch else { return };
                for raw in &batch.records {
                    inner.deliver(raw);
                }
                caught_up.extend(batch.caught_up);
            }
        }
        if assigned.as_ref().is_some_and(|a| a.is_subset(&caught_up))
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
    }
}

/// A request waiting for its reply (see [`Requests::ask`]).
pub struct Ask<R> {
    requests: Requests,
    topic: String,
    encoded: Result<crate::base::message::OutRecord>,
    timeout: Duration,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R> Ask<R> {
    /// Waits at most `timeout` for the reply (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<R: DeserializeOwned + Send + 'static> IntoFuture for Ask<R> {
    type Output = Result<R>;
    type IntoFuture = BoxFuture<'static, Result<R>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let record = self.encoded?;
            let bytes = self
                .requests
                .ask_raw(&self.topic, record, self.timeout)
                .await?;
            serde_json::from_slice(&bytes).map_err(|e| Error::Request {
                topic: self.topic.clone(),
                message: format!(
                    "the reply does not decode as `{}`: {e}",
                    std::any::type_name::<R>()
                ),
            })
        })
    }
}
