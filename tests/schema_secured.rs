//! rill's schema-registry client against a secured registry: Apicurio Registry serving HTTPS
//! only, with a certificate signed by a test CA, and refusing requests without HTTP basic
//! authentication (`registry/registry.sh` with `RILL_TEST_REGISTRY_SECURE=1`, started by
//! `scripts/test.sh`). With the CA and the credentials, schemas register and are looked up by
//! id and an app's Avro records round-trip; a wrong password is refused naming the subject and
//! the credentials, and an app with it does not start; without the CA (the system's roots
//! only) requests and starts fail at once (a certificate is not an outage to retry), naming
//! the registry's URL, the certificate and the setting that fixes it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::registry::{View, Visit, schema_of, visits};
use rill::prelude::*;
use rill::schema_registry::{RegistryConfig, SchemaRegistry, SchemaType};

/// How long a failing request may take at most (rill retries what it takes for an outage).
const BOUND: Duration = Duration::from_secs(60);

/// The secured registry of `scripts/test.sh`: its URL, CA and credentials.
struct Secured {
    url: String,
    ca: PathBuf,
    user: String,
    password: String,
}

impl Secured {
    /// A registry config with the CA and credentials (`password` in place of the right one).
    fn config(&self, ca: bool, password: Option<&str>) -> RegistryConfig {
        RegistryConfig {
            basic_auth: password.map(|p| (self.user.clone(), p.to_owned())),
            ca_file: ca.then(|| self.ca.clone()),
            ..RegistryConfig::new(&self.url)
        }
    }

    fn trusted(&self) -> RegistryConfig {
        self.config(true, Some(&self.password))
    }
}

/// The secured registry, or `None` (the test says it was skipped) unless
/// `RILL_REQUIRE_REGISTRY=1`, where a missing one fails the test.
fn secured() -> Option<Secured> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(url) = var("RILL_TEST_SECURE_REGISTRY") else {
        assert!(
            std::env::var("RILL_REQUIRE_REGISTRY").as_deref() != Ok("1"),
            "RILL_REQUIRE_REGISTRY=1 but RILL_TEST_SECURE_REGISTRY is not set; run scripts/test.sh"
        );
        eprintln!(
            "skipped: no secured schema registry (RILL_TEST_SECURE_REGISTRY); scripts/test.sh starts one"
        );
        return None;
    };
    let ca = var("RILL_TEST_SECURE_REGISTRY_CA").expect(
        "RILL_TEST_SECURE_REGISTRY_CA (the registry's CA, PEM) with RILL_TEST_SECURE_REGISTRY",
    );
    let auth = var("RILL_TEST_SECURE_REGISTRY_AUTH")
        .expect("RILL_TEST_SECURE_REGISTRY_AUTH (user:password) with RILL_TEST_SECURE_REGISTRY");
    let (user, password) = auth
        .split_once(':')
        .expect("RILL_TEST_SECURE_REGISTRY_AUTH is user:password");
    assert!(url.starts_with("https://"), "not an https:// URL: {url}");
    Some(Secured {
        url,
        ca: PathBuf::from(ca),
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// `register` of `View`'s schema under `subject` with `config`: its error, within [`BOUND`].
async fn register_error(config: &RegistryConfig, subject: &str) -> String {
    let registry = SchemaRegistry::from_config(config).expect("a client");
    let registering = registry.register(subject, SchemaType::Avro, schema_of::<View>());
    match tokio::time::timeout(BOUND, registering).await {
        Ok(Ok(id)) => panic!("{config:?} registered {subject} (id {id})"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("{config:?}: no answer nor error within {BOUND:?}"),
    }
}

#[tokio::test]
async fn with_the_ca_and_credentials_a_schema_registers_and_is_found_by_id() -> rill::Result<()> {
    let Some(secured) = secured() else {
        return Ok(());
    };
    let subject = format!("secured_{}-value", common::run_id());
    let schema = schema_of::<View>();
    let id = SchemaRegistry::from_config(&secured.trusted())?
        .register(&subject, SchemaType::Avro, schema)
        .await?;
    // A client of its own, so the id is asked of the registry, not found in a cache.
    let fresh = SchemaRegistry::from_config(&secured.trusted())?;
    let found = fresh.schema_by_id(id).await?;
    assert_eq!((found.id, found.schema_type), (id, SchemaType::Avro));
    assert!(found.schema.contains("\"View\""), "{}", found.schema);
    assert_eq!(
        fresh.lookup(&subject, SchemaType::Avro, schema).await?,
        Some(id)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_round_trips_avro_records_through_the_secured_registry() -> rill::Result<()> {
    let Some(secured) = secured() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("sec_views_{run}"), format!("sec_visits_{run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = secured.trusted();
    let app = App::new(&format!("sec_rt_{run}"))
        .configure(|c| c.schema_registry = Some(config))
        .agents([visits(&input, &output)])
        .test_in(dir.path())
        .await?;
    // Another app of the process fails to start (a wrong password): the first app's send to
    // a topic it only reads still binds it with its own registry and credentials.
    let wrong = secured.config(true, Some("not-the-password"));
    let err = start_error(wrong, &format!("sec_rt_other_{run}")).await;
    assert!(err.contains("refused the credentials"), "{err}");
    let view = View {
        user: "u1".into(),
        url: "/a".into(),
        at: 7,
    };
    app.producer().send_to(&input, &view).await?;
    app.producer().flush().await?;
    let seen: Vec<Visit> = app.expect(&output, 1).await?;
    assert_eq!(
        seen,
        [Visit {
            user: "u1".into(),
            url: "/a".into(),
            seen: 7
        }]
    );
    // The sink's schema was registered (over TLS, authenticated) under the output's subject.
    let (_, latest) = SchemaRegistry::from_config(&secured.trusted())?
        .latest(&format!("{output}-value"))
        .await?;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
    assert_eq!(json(&latest.schema), json(schema_of::<Visit>()));
    app.stop().await
}

#[tokio::test]
async fn a_wrong_password_or_none_is_refused_naming_the_subject_and_the_credentials() {
    let Some(secured) = secured() else {
        return;
    };
    let subject = format!("secured_refused_{}-value", common::run_id());
    for config in [
        secured.config(true, Some("not-the-password")),
        secured.config(true, None),
    ] {
        let err = register_error(&config, &subject).await;
        eprintln!("{config:?}: {err}");
        for needed in [
            "schema registry",
            subject.as_str(),
            "refused the credentials",
            "401",
            "user and password",
        ] {
            assert!(err.contains(needed), "`{needed}` missing from: {err}");
        }
        assert!(
            !err.contains("not-the-password"),
            "the password is in: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_a_wrong_password_does_not_start_and_says_why() {
    let Some(secured) = secured() else {
        return;
    };
    let run = common::run_id();
    let (input, output) = (format!("sec_bad_{run}"), format!("sec_bad_out_{run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = secured.config(true, Some("not-the-password"));
    let started = App::new(&format!("sec_bad_{run}"))
        .configure(|c| c.schema_registry = Some(config))
        .agents([visits(&input, &output)])
        .test_in(dir.path());
    let err = match tokio::time::timeout(BOUND, started).await {
        Ok(Ok(app)) => {
            app.stop().await.expect("stops");
            panic!("started with a wrong registry password");
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("the start neither failed nor succeeded within {BOUND:?}"),
    };
    eprintln!("{err}");
    for needed in ["schema registry", "-value", "refused the credentials"] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
    assert!(
        err.contains(&format!("{input}-value")) || err.contains(&format!("{output}-value")),
        "no subject of the app's topics in: {err}"
    );
}

/// A start of the `visits` app with `config`: its error, within [`BOUND`].
async fn start_error(config: RegistryConfig, app_id: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = App::new(app_id)
        .configure(|c| c.schema_registry = Some(config))
        .agents([visits(&format!("{app_id}_in"), &format!("{app_id}_out"))])
        .test_in(dir.path());
    match tokio::time::timeout(BOUND, started).await {
        Ok(Ok(app)) => {
            app.stop().await.expect("stops");
            panic!("{app_id} started");
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("{app_id}: the start neither failed nor succeeded within {BOUND:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_requests_and_starts_fail_naming_the_certificate_and_the_setting() {
    let Some(secured) = secured() else {
        return;
    };
    let run = common::run_id();
    let subject = format!("secured_untrusted_{run}-value");
    let config = secured.config(false, Some(&secured.password));
    let started = std::time::Instant::now();
    let err = register_error(&config, &subject).await;
    eprintln!("register, after {:?}: {err}", started.elapsed());
    for needed in [
        "schema registry",
        subject.as_str(),
        &secured.url,
        "certificate",
        "RILL_SCHEMA_REGISTRY_CA",
    ] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
    let started = std::time::Instant::now();
    let err = start_error(config, &format!("sec_untrusted_{run}")).await;
    eprintln!("app start, after {:?}: {err}", started.elapsed());
    for needed in ["schema registry", &secured.url, "RILL_SCHEMA_REGISTRY_CA"] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
}
