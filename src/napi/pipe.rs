//! The one way from the core to JavaScript for a spawner and everything over it (its
//! pools and recovery managers): one thread-safe function, so JavaScript sees their
//! events in the order the core produced them (a session's `session-ended` before the
//! pool's `session-released`). Each delivery names its target (0: the spawner; others
//! are handed out by [`Pipe::attach`]); `lib/spawner.js` routes it.
//!
//! The pipe also decides whether Node stays alive: it counts work in flight (the
//! core's [`Activity`]: live sessions, requests a pool holds, recoveries waiting; and
//! every delivery not yet made) and keeps the thread-safe function ref'd, and the
//! spawner's JavaScript object strongly referenced, exactly while the count is above
//! zero. The core ends a piece of work only after sending the events it caused. Ref
//! and unref are only possible on JavaScript's thread: a change of the count elsewhere
//! sends a `recheck` through the function, which applies it.
//!
//! Events that a JavaScript call causes on JavaScript's thread (the `recovery-abandoned`
//! of `abandonRecovery`) are delivered before that call returns, as an `EventEmitter`
//! would emit them ([`Pipe::sync`]). Deliveries that come in a row from one piece of
//! work on another thread (a session's `session-spawned` and its `session-started`, from
//! the launcher) can go as one batch ([`Pipe::gather`]): JavaScript's thread then wakes
//! once for them, not once each.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{FnArgs, Function, FunctionRef, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Env, JsValue, Status};
use parking_lot::Mutex;

use super::convert::RawValue;
use super::events;
use crate::approval::ApprovalRequest;
use crate::event::{EventHandler, SpawnerEvent};
use crate::notice::Activity;

/// What travels to JavaScript.
pub(crate) enum Payload {
    Event(SpawnerEvent),
    /// Answered with `answerApproval(id, approved)`.
    Approval { id: u32, request: ApprovalRequest },
    /// The count of work in flight changed off JavaScript's thread.
    Recheck,
    /// A pool asks for the config of its admitted request number `request`.
    Supply { request: u32 },
    /// `startSession`'s call number `token` started the session (its id) or failed.
    Started { token: u32, outcome: Result<String, crate::SpawnError> },
    /// Several deliveries in order, made by one piece of work ([`Pipe::gather`]).
    Batch(Vec<Delivery>),
}

pub(crate) struct Delivery {
    pub target: u32,
    pub payload: Payload,
}

impl Delivery {
    /// How much work in flight it stands for until delivered.
    fn count(&self) -> usize {
        match &self.payload {
            Payload::Recheck => 0,
            Payload::Batch(held) => held.len(),
            _ => 1,
        }
    }
}

pub(crate) type Args = FnArgs<(RawValue, RawValue, RawValue)>;
type EventFn = ThreadsafeFunction<Delivery, Unknown<'static>, Args, Status, false, true>;

/// Raw handles only touched on JavaScript's thread.
struct Hold {
    function: sys::napi_threadsafe_function,
    /// The spawner's JavaScript object: strong while work is in flight, weak otherwise.
    owner: sys::napi_ref,
    referenced: bool,
}
// SAFETY: the handles are used on JavaScript's thread only (`update`); the mutex
// only makes the struct shareable with the threads that deliver.
unsafe impl Send for Hold {}

/// The part the thread-safe function's callback shares.
struct State {
    busy: AtomicUsize,
    recheck_sent: AtomicBool,
    hold: Mutex<Option<Hold>>,
}

impl State {
    /// On JavaScript's thread: ref'd and strong while work is in flight.
    fn update(&self, env: &Env) {
        self.recheck_sent.store(false, Ordering::SeqCst);
        let busy = self.busy.load(Ordering::SeqCst) > 0;
        let mut hold = self.hold.lock();
        let Some(h) = hold.as_mut() else { return };
        if h.referenced == busy {
            return;
        }
        let raw = env.raw();
        // SAFETY: on JavaScript's thread, with handles of this environment that live
        // until `release` below.
        unsafe {
            let mut count = 0;
            if busy {
                sys::napi_ref_threadsafe_function(raw, h.function);
                sys::napi_reference_ref(raw, h.owner, &mut count);
            } else {
                sys::napi_unref_threadsafe_function(raw, h.function);
                sys::napi_reference_unref(raw, h.owner, &mut count);
            }
        }
        h.referenced = busy;
    }
}

pub(crate) struct Pipe {
    function: EventFn,
    listener: FunctionRef<Args, Unknown<'static>>,
    state: Arc<State>,
    next_target: AtomicU32,
}

/// Deliveries held back on one thread while a piece of work runs.
struct Capture {
    /// The pipe they are for.
    pipe: usize,
    /// A JavaScript call ([`Pipe::sync`]), or work elsewhere ([`Pipe::gather`]).
    in_call: bool,
    held: Vec<Delivery>,
}

thread_local! {
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// Puts back the capture that was current before (none, mostly), even on a panic.
struct Restore(Option<Capture>);

impl Restore {
    fn start(pipe: usize, in_call: bool) -> Self {
        Self(CAPTURE.with(|c| c.borrow_mut().replace(Capture { pipe, in_call, held: Vec::new() })))
    }

    /// What the work captured.
    fn finish(self) -> Vec<Delivery> {
        CAPTURE.with(|c| c.borrow_mut().take()).map(|c| c.held).unwrap_or_default()
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let outer = self.0.take();
        CAPTURE.with(|c| *c.borrow_mut() = outer);
    }
}

impl Pipe {
    /// On JavaScript's thread. `listener(target, name, payload)` gets every delivery;
    /// `owner` (the spawner's object) is kept alive while work is in flight.
    pub fn new(env: &Env, listener: Function<'_, Args, Unknown<'static>>, owner: Unknown<'_>) -> napi::Result<Self> {
        let state = Arc::new(State { busy: AtomicUsize::new(0), recheck_sent: AtomicBool::new(false), hold: Mutex::new(None) });
        let shared = Arc::clone(&state);
        let function = listener
            .build_threadsafe_function::<Delivery>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(move |ctx: ThreadsafeCallContext<Delivery>| {
                // Delivered now (its JavaScript call follows at once): no longer in flight.
                // Ref and unref change only when the count reaches zero here or a
                // recheck asks (every other change of the count sends one).
                let recheck = matches!(ctx.value.payload, Payload::Recheck);
                let count = ctx.value.count();
                if recheck || shared.busy.fetch_sub(count, Ordering::SeqCst) == count {
                    shared.update(&ctx.env);
                }
                // A panic must not unwind into Node (it would abort the process).
                match catch_unwind(AssertUnwindSafe(|| events::to_js(&ctx.env, ctx.value))) {
                    Ok(Ok(args)) => Ok(args),
                    Ok(Err(e)) => events::native_error(&ctx.env, &format!("converting an event failed: {e}")),
                    Err(_) => events::native_error(&ctx.env, "converting an event panicked"),
                }
            })?;
        let mut owner_ref = std::ptr::null_mut();
        // SAFETY: on JavaScript's thread with a live value; a weak reference to start.
        let status = unsafe { sys::napi_create_reference(env.raw(), owner.raw(), 0, &mut owner_ref) };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason(format!("cannot reference the spawner ({status})")));
        }
        *state.hold.lock() = Some(Hold { function: function.raw(), owner: owner_ref, referenced: false });
        Ok(Self { function, listener: listener.create_ref()?, state, next_target: AtomicU32::new(1) })
    }

    fn this(&self) -> usize {
        self as *const Self as usize
    }

    /// A target for a component over this spawner.
    pub fn attach(&self) -> u32 {
        self.next_target.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a delivery to JavaScript: at the end of the current call when it comes
    /// from one, else through the thread-safe function. False when JavaScript is gone.
    pub fn deliver(&self, delivery: Delivery) -> bool {
        let this = self.this();
        let delivery = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
            Some(capture) if capture.pipe == this => {
                if !capture.in_call {
                    // Held, but on its way (below): counted now.
                    self.state.busy.fetch_add(1, Ordering::SeqCst);
                }
                capture.held.push(delivery);
                None
            }
            _ => Some(delivery),
        });
        let Some(delivery) = delivery else { return true };
        // An event on its way is work in flight: Node must not exit before it arrives
        // (the work it reports may be over already). Whoever sends it holds other work
        // meanwhile, so the count does not start from zero here.
        self.state.busy.fetch_add(1, Ordering::SeqCst);
        self.send(delivery)
    }

    /// Queues a delivery counted in flight already (a batch once per delivery in it).
    fn send(&self, delivery: Delivery) -> bool {
        let count = delivery.count();
        // Unbounded: output is bounded by the credit each chunk holds until converted.
        let queued = self.function.call(delivery, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok;
        if !queued {
            self.state.busy.fetch_sub(count, Ordering::SeqCst);
        }
        queued
    }

    /// Runs a JavaScript call's work; the deliveries it causes go to the listener
    /// before the call returns, in order. On JavaScript's thread.
    pub fn sync<T>(&self, env: &Env, work: impl FnOnce() -> T) -> napi::Result<T> {
        let capture = Restore::start(self.this(), true);
        let output = work();
        let captured = capture.finish();
        self.state.update(env);
        let listener = self.listener.borrow_back(env)?;
        for delivery in captured {
            let args = events::to_js(env, delivery)?;
            listener.call(args)?;
        }
        Ok(output)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // The owner reference cannot be deleted here (this may run on any thread): it
        // is weak by now, and goes with the environment.
        self.state.hold.lock().take();
    }
}

impl Activity for Pipe {
    fn begin(&self) {
        if self.state.busy.fetch_add(1, Ordering::SeqCst) == 0 && !self.in_sync() {
            self.recheck();
        }
    }

    fn end(&self) {
        if self.state.busy.fetch_sub(1, Ordering::SeqCst) == 1 && !self.in_sync() {
            self.recheck();
        }
    }
}

impl Pipe {
    /// Whether this runs inside a JavaScript call on this pipe ([`Pipe::sync`]), which
    /// applies the count when the call's work is done: no recheck needed (it would
    /// only wake JavaScript's thread once more, for nothing).
    fn in_sync(&self) -> bool {
        let this = self.this();
        CAPTURE.with(|c| matches!(&*c.borrow(), Some(capture) if capture.pipe == this && capture.in_call))
    }

    /// Runs `work` (off JavaScript's thread); the deliveries it makes on this thread go
    /// when it returns, as one batch. Inside a capture already, they join that one.
    pub fn gather(&self, work: &mut dyn FnMut()) {
        if CAPTURE.with(|c| c.borrow().is_some()) {
            return work();
        }
        let capture = Restore::start(self.this(), false);
        let outcome = catch_unwind(AssertUnwindSafe(&mut *work));
        let mut held = capture.finish();
        // Sent even when the work panicked: each is counted in flight until delivered.
        let delivery = match held.len() {
            0 => None,
            1 => held.pop(),
            _ => Some(Delivery { target: 0, payload: Payload::Batch(held) }),
        };
        if let Some(delivery) = delivery {
            self.send(delivery);
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Asks JavaScript's thread to apply the count (once until it has).
    fn recheck(&self) {
        if !self.state.recheck_sent.swap(true, Ordering::SeqCst) {
            let _ = self.function.call(Delivery { target: 0, payload: Payload::Recheck }, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// A core component's event handler: its events go down the pipe to `target`.
pub(crate) struct PipeHandler {
    pub pipe: Arc<Pipe>,
    pub target: u32,
}

impl EventHandler for PipeHandler {
    fn handle(&self, event: SpawnerEvent) {
        // spawnSession reports its own failure by rejecting (`session-started`).
        if matches!(event, SpawnerEvent::SpawnFailed { .. }) {
            return;
        }
        self.pipe.deliver(Delivery { target: self.target, payload: Payload::Event(event) });
    }

    fn together(&self, work: &mut dyn FnMut()) {
        self.pipe.gather(work)
    }
}

/// The raw napi value type is needed by `to_js`.
pub(crate) fn raw_args(env: &Env, target: u32, name: &str, payload: sys::napi_value) -> napi::Result<Args> {
    let raw = env.raw();
    // SAFETY: on JavaScript's thread, in the current scope.
    unsafe {
        let target = u32::to_napi_value(raw, target)?;
        let name = <&str>::to_napi_value(raw, name)?;
        Ok(FnArgs::from((RawValue(target), RawValue(name), RawValue(payload))))
    }
}
