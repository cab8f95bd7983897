//! The fetcher's own queue, read a batch at a time.
//!
//! `BaseConsumer::poll` hands out one record per call: a lock, an event, an `Arc` and three
//! clock reads each (the fetcher's thread was a quarter of a live keyed count's CPU, and clock
//! reads a quarter of the thread's). librdkafka's batch read
//! (`rd_kafka_consume_batch_queue`) cannot be used on the consumer's queue: that queue carries
//! rebalances too, and the batch read answers them itself (an unassign, rill's hooks never
//! called). So each assigned partition's records are forwarded to a queue of the fetcher's own
//! and read from there in batches; the consumer's queue keeps the rebalances, errors and
//! statistics, and whatever a partition fetched before it was forwarded, which the fetcher
//! reads first (docs/decisions.md, "The fetcher reads a batch at a time").
//!
//! rust-rdkafka has no binding for either call, so this module, and only it, calls librdkafka
//! through `rdkafka::bindings`.

#![allow(
    unsafe_code,
    reason = "librdkafka's partition-queue forwarding and batch read have no safe binding in rdkafka"
)]

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;

/// A queue of the fetcher's own that assigned partitions forward their records to; it lives
/// no longer than the consumer it was made for (`'c`).
pub(super) struct FetchQueue<'c> {
    client: NonNull<rdsys::rd_kafka_t>,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// Where a batch read puts its messages.
    read: Vec<*mut rdsys::rd_kafka_message_t>,
    consumer: PhantomData<&'c ()>,
}

impl<'c> FetchQueue<'c> {
    /// A queue for `consumer`'s partitions, reading up to `batch` records at a time; `None`
    /// when librdkafka cannot make one (the fetcher then reads the consumer's queue alone).
    pub(super) fn new<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        batch: usize,
    ) -> Option<Self> {
        let client = NonNull::new(consumer.client().native_ptr())?;
        // SAFETY: `client` is the consumer's live handle, and `'c` keeps it alive longer than
        // the queue (destroyed in `drop`).
        let queue = NonNull::new(unsafe { rdsys::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(FetchQueue {
            client,
            queue,
            read: Vec::with_capacity(batch),
            consumer: PhantomData,
        })
    }

    /// Forwards each partition's records to this queue from now on (those already on the
    /// consumer's queue stay there; those waiting in the partition's own move over in order).
    /// Done after every assignment:
    /// librdkafka drops the forwarding when it stops fetching a partition, and does not forward
    /// a partition that this queue took over back to the consumer's queue when it starts again.
    pub(super) fn forward<'t>(&self, partitions: impl IntoIterator<Item = (&'t str, i32)>) {
        for (topic, partition) in partitions {
            let Ok(name) = CString::new(topic) else {
                continue;
            };
            // SAFETY: the client is alive (`'c`); the partition's queue handle is released
            // below, and the forwarding outlives the handle (it belongs to the partition).
            unsafe {
                let from = rdsys::rd_kafka_queue_get_partition(
                    self.client.as_ptr(),
                    name.as_ptr(),
                    partition,
                );
                if from.is_null() {
                    tracing::warn!(
                        topic,
                        partition,
                        "no queue for a partition: read record by record"
                    );
                    continue;
                }
                rdsys::rd_kafka_queue_forward(from, self.queue.as_ptr());
                rdsys::rd_kafka_queue_destroy(from);
            }
        }
    }

    /// Reads what the queue holds, up to `most` records (and the batch size), waiting up to
    /// `wait` for the first; each is handed to `each` (a record or the error librdkafka put in
    /// its place), and released after. Returns how many were read.
    pub(super) fn read(
        &mut self,
        wait: Duration,
        most: usize,
        mut each: impl FnMut(Result<&FetchedMessage, KafkaError>),
    ) -> usize {
        let capacity = most.min(self.read.capacity());
        // Waiting, librdkafka's batch read fills the whole batch or waits out its timeout: wait
        // for one record only, then take what else is there without waiting.
        let waited = if wait.is_zero() {
            0
        } else {
            self.read_into(wait, capacity.min(1))
        };
        let read = waited + self.read_into(Duration::ZERO, capacity - waited);
        for &m in &self.read[..read] {
            // SAFETY: librdkafka returned `m` and it is not destroyed until below.
            let message = unsafe { &*(m as *const FetchedMessage) };
            let code = message.0.err;
            if code == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                each(Ok(message));
            } else {
                each(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::from(
                    code,
                ))));
            }
        }
        for m in self.read.drain(..) {
            // SAFETY: each message of the batch is destroyed once, and none is used after.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        read
    }

    /// One batch read into `self.read` after what it holds: how many it read.
    fn read_into(&mut self, wait: Duration, most: usize) -> usize {
        let at = self.read.len();
        if most == 0 {
            return 0;
        }
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the buffer has room for `most` pointers after `at` (capacity checked by the
        // caller), and librdkafka writes only as many as it returns.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                ms,
                self.read.as_mut_ptr().add(at),
                most,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(most);
        // SAFETY: librdkafka initialised `n` pointers after `at`.
        unsafe { self.read.set_len(at + n) };
        n
    }
}

impl Drop for FetchQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: the queue is ours and destroyed once; partitions still forwarding to it keep
        // a reference of their own in librdkafka until they stop.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// A record read from the fetcher's queue, as librdkafka's message (borrowed for one call of
/// `FetchQueue::read`'s callback).
#[repr(transparent)]
pub(super) struct FetchedMessage(rdsys::rd_kafka_message_t);

impl FetchedMessage {
    fn ptr(&self) -> *mut rdsys::rd_kafka_message_t {
        ptr::from_ref(&self.0).cast_mut()
    }
}

/// A slice of librdkafka's, or `None` for a null pointer.
///
/// # Safety
/// `data` must point to `len` bytes that outlive `'a`, or be null.
unsafe fn slice<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

impl Message for FetchedMessage {
    type Headers = FetchedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's key, alive as long as the message.
        unsafe { slice(self.0.key, self.0.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's payload, alive as long as the message.
        unsafe { slice(self.0.payload, self.0.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let data = self.0.payload.cast::<u8>();
        // SAFETY: as `payload`; the caller takes librdkafka's lack of a promise upon itself.
        (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts_mut(data, self.0.len) })
    }

    fn topic(&self) -> &str {
        // SAFETY: the topic handle of a fetched message names its topic for the message's life.
        let name = unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.0.rkt)) };
        // Kafka's topic names are ASCII (`[a-zA-Z0-9._-]`).
        name.to_str().unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.0.partition
    }

    fn offset(&self) -> i64 {
        self.0.offset
    }

    fn timestamp(&self) -> Timestamp {
        use rdsys::rd_kafka_timestamp_type_t as Kind;
        let mut kind = Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let at = unsafe { rdsys::rd_kafka_message_timestamp(self.ptr(), &mut kind) };
        match kind {
            _ if at == -1 => Timestamp::NotAvailable,
            Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            Kind::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(at),
            Kind::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(at),
        }
    }

    fn headers(&self) -> Option<&FetchedHeaders> {
        let mut headers = ptr::null_mut();
        // SAFETY: a live message; its headers live as long as it does.
        let code = unsafe { rdsys::rd_kafka_message_headers(self.ptr(), &mut headers) };
        (code == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
            // SAFETY: a zero-sized view of librdkafka's headers, borrowed from the message.
            .then(|| unsafe { &*(headers as *const FetchedHeaders) })
    }
}

/// A fetched message's headers, as librdkafka's (a zero-sized view of them).
pub(super) struct FetchedHeaders;

impl FetchedHeaders {
    fn ptr(&self) -> *const rdsys::rd_kafka_headers_t {
        ptr::from_ref(self).cast()
    }
}

impl Headers for FetchedHeaders {
    fn count(&self) -> usize {
        // SAFETY: headers of a live message.
        unsafe { rdsys::rd_kafka_header_cnt(self.ptr()) }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let mut name = ptr::null();
        let mut value = ptr::null();
        let mut size = 0;
        // SAFETY: headers of a live message; what librdkafka returns lives as long as they do.
        unsafe {
            let code =
                rdsys::rd_kafka_header_get_all(self.ptr(), idx, &mut name, &mut value, &mut size);
            if code != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            Some(Header {
                key: CStr::from_ptr(name).to_str().unwrap_or(""),
                value: slice(value, size),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::DefaultConsumerContext;
    use rdkafka::message::OwnedHeaders;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};

    /// What the test keeps of a record read from the queue.
    #[derive(Debug, PartialEq)]
    struct Seen {
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: Option<i64>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn seen(m: &FetchedMessage) -> Seen {
        Seen {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            // As the fetcher copies them.
            headers: super::super::fetch::headers_of(m).0,
        }
    }

    /// Reads `queue` until `n` records came, `most` at a time; panics after 20 s. Between reads
    /// it polls the consumer and forwards the partitions again, as the fetcher does.
    fn read_n(
        consumer: &BaseConsumer<DefaultConsumerContext>,
        queue: &mut FetchQueue<'_>,
        n: usize,
        most: usize,
    ) -> Vec<Seen> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "read {} of {n}",
                out.len()
            );
            let polled = consumer.poll(Duration::ZERO);
            assert!(
                !matches!(polled, Some(Ok(_))),
                "a record on the consumer's queue"
            );
            queue.forward([("t", 0), ("t", 1)]);
            let read = queue.read(Duration::from_millis(50), most, |m| {
                out.push(seen(m.expect("a record, not an error")));
            });
            assert!(read <= most, "read {read}, at most {most}");
        }
        out
    }

    #[test]
    fn forwarded_partitions_are_read_in_batches_in_order_with_keys_headers_and_times() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        let mut want = Vec::new();
        for i in 0..30_i64 {
            let partition = i32::from(i % 3 == 0);
            let key = format!("k{i}");
            let value = format!("v{i}");
            let mut record = BaseRecord::to("t")
                .partition(partition)
                .key(&key)
                .payload(&value)
                .timestamp(1_000 + i);
            if i % 2 == 0 {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "h",
                    value: Some(&value),
                }));
            }
            producer.send(record).map_err(|(e, _)| e).expect("send");
            want.push((partition, key, value, i));
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut queue = FetchQueue::new(&consumer, 100).expect("queue");
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("t", p, Offset::Beginning)
                .expect("offset");
        }
        // Forwarded before librdkafka starts fetching: nothing comes on the consumer's queue.
        queue.forward([("t", 0), ("t", 1)]);
        consumer.assign(&tpl).expect("assign");
        let check = |got: &[Seen]| {
            assert_eq!(got.len(), want.len());
            for p in 0..2 {
                let mine: Vec<&Seen> = got.iter().filter(|s| s.partition == p).collect();
                let expected: Vec<_> = want.iter().filter(|w| w.0 == p).collect();
                assert_eq!(mine.len(), expected.len(), "partition {p}");
                for (offset, (s, (_, key, value, i))) in mine.iter().zip(expected).enumerate() {
                    assert_eq!(s.offset, offset as i64, "partition {p} in order");
                    assert_eq!(s.key.as_deref(), Some(key.as_bytes()));
                    assert_eq!(s.value.as_deref(), Some(value.as_bytes()));
                    assert_eq!(s.timestamp, Some(1_000 + i));
                    let headers = if i % 2 == 0 {
                        vec![("h".to_owned(), Some(value.as_bytes().to_vec()))]
                    } else {
                        Vec::new()
                    };
                    assert_eq!(s.headers, headers);
                }
            }
        };
        check(&read_n(&consumer, &mut queue, want.len(), 7));

        // Stopping a partition drops its forwarding (librdkafka does it, asynchronously);
        // forwarded again, it is read again, and never through the consumer's queue.
        consumer.unassign().expect("unassign");
        consumer.assign(&tpl).expect("assign again");
        check(&read_n(&consumer, &mut queue, want.len(), 100));
    }
}
