//! The first contact with the cluster at startup: a metadata request through a client with the
//! user's settings. A broker that refuses those settings (SASL authentication, a TLS handshake)
//! stops the worker within seconds with the settings to check, where librdkafka alone would
//! retry forever. A broker that is merely not
//! reachable yet is waited for later, as before: an outage at startup is not a config error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{LogContext, creation_error};
use crate::base::error::{Error, Result};

/// How long the probe tries before leaving an unreachable broker to the usual waiting.
const PROBE_FOR: Duration = Duration::from_secs(15);

/// Why the broker refused the client's settings, and which settings to check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    settings: &'static str,
    reason: String,
}

/// Recognises refusals among librdkafka's errors; logs like every other client.
#[derive(Default)]
struct ProbeContext {
    refusal: Mutex<Option<Refusal>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        LogContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refusal) = refusal(&error, reason) {
            let mut slot = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(refusal);
        } else {
            LogContext.error(error, reason);
        }
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// The settings a librdkafka error blames, if it is one that retrying cannot fix.
fn refusal(error: &KafkaError, reason: &str) -> Option<Refusal> {
    let code = error.rdkafka_error_code();
    let settings = if code == Some(RDKafkaErrorCode::Authentication) {
        "sasl.mechanism, sasl.username and sasl.password (or the sasl.oauthbearer.* settings)"
    } else if code == Some(RDKafkaErrorCode::SSL) {
        "ssl.ca.location (the CA that signed the broker's certificate), and for mutual TLS ssl.certificate.location and ssl.key.location"
    } else {
        return None;
    };
    Some(Refusal {
        settings,
        reason: reason.to_owned(),
    })
}

/// Asks the cluster for its metadata with `base` (the settings every client of the worker
/// shares); an error naming the settings to check if the broker refuses them.
pub(super) fn check_settings(base: &ClientConfig, bootstrap: &str) -> Result<()> {
    // A producer: its `poll` serves librdkafka's error callbacks.
    let client: BaseProducer<ProbeContext> = base
        .create_with_context(ProbeContext::default())
        .map_err(|e| creation_error(base, "creating a client to check the settings", e))?;
    let started = Instant::now();
    while started.elapsed() < PROBE_FOR {
        let answered = client
            .client()
            .fetch_metadata(None, Duration::from_secs(1))
            .is_ok();
        client.poll(Duration::ZERO);
        let refused = client
            .context()
            .refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(Refusal { settings, reason }) = refused {
            return Err(Error::config(
                format!("kafka properties {settings}"),
                format!("the broker at {bootstrap} refused this worker's connection: {reason}"),
            ));
        }
        if answered {
            return Ok(());
        }
    }
    tracing::warn!(bootstrap, "no answer from the broker yet; waiting for it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_and_tls_failures_are_refusals_naming_the_settings() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let r = refusal(&auth, "SASL authentication error: invalid credentials").unwrap();
        assert!(r.settings.contains("sasl.password"), "{r:?}");
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        let r = refusal(&tls, "SSL handshake failed: certificate verify failed").unwrap();
        assert!(r.settings.contains("ssl.ca.location"), "{r:?}");
        // An unreachable broker is waited for, not refused.
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(refusal(&transport, "Connection refused"), None);
    }
}
