//! Promises settled from the runtime: a future runs on the process's runtime and its
//! output becomes the promise's value (or error) on JavaScript's thread. A panic in
//! the future rejects the promise; a promise whose future is dropped unsettled (the
//! runtime stopping) rejects too, so none keeps Node alive for ever.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use napi::bindgen_prelude::{Object, ToNapiValue};
use napi::{Env, JsDeferred, Result};

use super::thrown;

type Resolver<D> = Box<dyn FnOnce(Env) -> Result<D> + Send>;

/// A future whose panic is its output instead of the runtime worker's death.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The deferred of one promise; dropped unsettled, it rejects.
struct Settle<D: ToNapiValue + 'static> {
    deferred: Option<JsDeferred<D, Resolver<D>>>,
    what: &'static str,
}

impl<D: ToNapiValue + 'static> Settle<D> {
    fn resolve(mut self, resolver: Resolver<D>) {
        if let Some(deferred) = self.deferred.take() {
            deferred.resolve(resolver);
        }
    }
}

impl<D: ToNapiValue + 'static> Drop for Settle<D> {
    fn drop(&mut self) {
        if let Some(deferred) = self.deferred.take() {
            deferred.reject(napi::Error::from_reason(format!("{} was abandoned: the runtime stopped", self.what)));
        }
    }
}

/// Runs `work` on the runtime; the promise gets `convert(output)` on JavaScript's
/// thread. `what` names the operation in errors.
pub(crate) fn spawn<'e, T, D>(
    env: &'e Env,
    what: &'static str,
    work: impl Future<Output = T> + Send + 'static,
    convert: impl FnOnce(&Env, T) -> Result<D> + Send + 'static,
) -> Result<Object<'e>>
where
    T: Send + 'static,
    D: ToNapiValue + 'static,
{
    let runtime = super::runtime(env)?;
    let (deferred, promise) = env.create_deferred::<D, Resolver<D>>()?;
    let settle = Settle { deferred: Some(deferred), what };
    runtime.spawn(async move {
        let outcome = CatchUnwind(Box::pin(work)).await;
        settle.resolve(Box::new(move |env: Env| match outcome {
            Ok(value) => convert(&env, value),
            Err(_) => Err(thrown(&env, "ERR_NATIVE", format!("internal error (panic) in {what}"), &[])),
        }));
    });
    Ok(promise)
}
