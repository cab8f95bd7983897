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
        // A connection failure is also logged (facility FAIL); under load the error callback
        // can report it as a plain transport failure, so the log's text counts too.
        if let Some(refusal) = refusal_in_text(message) {
            self.refused(refusal);
        }
        LogContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refusal) = refusal(&error, reason) {
            self.refused(refusal);
        } else {
            LogContext.error(error, reason);
        }
    }
}

impl ProbeContext {
    fn refused(&self, refusal: Refusal) {
        let mut slot = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(refusal);
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

const SASL_SETTINGS: &str =
    "sasl.mechanism, sasl.username and sasl.password (or the sasl.oauthbearer.* settings)";
const TLS_SETTINGS: &str = "ssl.ca.location (the CA that signed the broker's certificate), and for mutual TLS ssl.certificate.location and ssl.key.location";

/// The settings a librdkafka error blames, if it is one that retrying cannot fix.
fn refusal(error: &KafkaError, reason: &str) -> Option<Refusal> {
    let settings = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Authentication) => SASL_SETTINGS,
        Some(RDKafkaErrorCode::SSL) => TLS_SETTINGS,
        _ => return refusal_in_text(reason),
    };
    Some(Refusal {
        settings,
        reason: reason.to_owned(),
    })
}

/// A refusal recognised by librdkafka's wording (a transport error or log line about a failed
/// TLS handshake or SASL authentication).
fn refusal_in_text(text: &str) -> Option<Refusal> {
    let settings = if text.contains("SSL handshake failed") {
        TLS_SETTINGS
    } else if text.contains("SASL authentication error") {
        SASL_SETTINGS
    } else {
        return None;
    };
    Some(Refusal {
        settings,
        reason: text.to_owned(),
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
        // The same failures reported as transport errors are recognised by their text.
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let r = refusal(
            &transport,
            "ssl://b:9093/1: SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        assert!(r.settings.contains("ssl.ca.location"), "{r:?}");
        // An unreachable broker is waited for, not refused.
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(refusal(&transport, "Connection refused"), None);
    }
}
