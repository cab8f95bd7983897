//! Running one agent instance: the agent function, called again after a failure the policy
//! gets past, inside the span of the record it processes.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::base::error::{Error, Result};
use crate::base::failure::{Failure, FailureKind};
use crate::instance::context::{CURRENT, InstanceState};
use crate::instance::record_loop::RecordLoop;
use crate::wiring::agent::{AgentContext, RunFn};

/// Runs one agent instance: calls the agent function, and again after a failure the policy
/// gets past (on the same stream, continuing after the failing record, or with it again for an
/// in-place retry); stops with the error when the policy says so.
pub(super) async fn run_instance(
    run: RunFn,
    template: AgentContext,
    core: RecordLoop,
) -> Result<()> {
    let shared = template.shared.clone();
    let mut core = Some(core);
    loop {
        let mut ctx = template.clone_parts();
        ctx.core = core.take();
        let outcome = call(&run, ctx, &shared).await;
        let parked = RecordLoop::take_parked(&shared);
        // Window state kept by the finished function goes into its table overlays now (the
        // operators stay registered: a window built again by the next call takes its over).
        for flusher in shared.flushers() {
            if let Err(e) = flusher.flush() {
                shared.fail(e);
            }
        }
        match after_call(outcome, parked, &shared) {
            After::Again(next) => core = Some(next),
            After::Finish(parked, result) => {
                if let Some(parked) = parked {
                    parked.finish().await;
                }
                return result;
            }
        }
    }
}

/// What the agent function's call ended with: its result, or its panic.
type Outcome = std::result::Result<Result<()>, Box<dyn std::any::Any + Send>>;

/// Calls the agent function once, with the instance's context task-local (sends join its
/// commit buffer) and, when tracing is exported, inside the record's span.
async fn call(run: &RunFn, ctx: AgentContext, shared: &Arc<InstanceState>) -> Outcome {
    let call = run(ctx);
    let call: BoxFuture<'static, Result<()>> = if crate::base::telemetry::active() {
        Box::pin(RecordScope {
            inner: call,
            shared: shared.clone(),
        })
    } else {
        call
    };
    CURRENT
        .scope(
            shared.clone(),
            std::panic::AssertUnwindSafe(call).catch_unwind(),
        )
        .await
}

/// After a call of the agent function: call it again on this core, or finish (the core it
/// left, if any, commits what is finished and ends) with this result.
enum After {
    Again(RecordLoop),
    Finish(Option<RecordLoop>, Result<()>),
}

/// Decides what follows a call of the agent function from how it ended.
fn after_call(outcome: Outcome, parked: Option<RecordLoop>, shared: &InstanceState) -> After {
    if let Some(fatal) = shared.take_fatal() {
        return After::Finish(parked, Err(fatal));
    }
    let (error, failure) = match outcome {
        Ok(Ok(())) => return After::Finish(parked, Ok(())),
        Ok(Err(Error::Transaction(why))) if parked.is_some() => {
            // `Stream::commit` saw its transaction aborted: the stream has rolled back and
            // reads again from the committed offsets; call the function again on it.
            tracing::warn!(agent = %shared.agent, error = %why, "commit aborted; calling the agent function again from the last commit");
            return match parked {
                Some(core) => After::Again(core),
                None => After::Finish(None, Err(Error::Transaction(why))),
            };
        }
        Ok(Err(e)) if !e.is_record_failure() => return After::Finish(parked, Err(e)),
        Ok(Err(e)) => {
            let failure = Failure {
                kind: FailureKind::Error,
                message: e.to_string(),
            };
            (e, failure)
        }
        Err(panic) => {
            let message = format!("panicked: {}", crate::base::error::panic_message(&panic));
            let failure = Failure {
                kind: FailureKind::Panic,
                message: message.clone(),
            };
            (Error::agent(&shared.agent, message), failure)
        }
    };
    let Some(mut parked) = parked else {
        return After::Finish(None, Err(error));
    };
    match parked.agent_failed(failure) {
        Ok(()) => {
            tracing::info!(agent = %shared.agent, "calling the agent function again after the failed record");
            After::Again(parked)
        }
        Err(_) => After::Finish(Some(parked), Err(error)),
    }
}

/// Polls an agent's future inside the span of the record it is processing, so `tracing` spans
/// the agent creates nest under the record's (tracing export only).
struct RecordScope {
    inner: BoxFuture<'static, Result<()>>,
    shared: Arc<InstanceState>,
}

impl std::future::Future for RecordScope {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        struct Leave<'a>(&'a InstanceState);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                // Also when the agent panics: the span must not stay entered on this thread.
                self.0.exit_record_span();
            }
        }
        let shared = self.shared.clone();
        shared.enter_record_span();
        let _leave = Leave(&shared);
        self.inner.as_mut().poll(cx)
    }
}
