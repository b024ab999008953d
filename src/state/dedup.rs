//! At-most-once application of client requests (Raft thesis, section 6.3).
//!
//! A client numbers its requests within its session and retries a request with the same
//! number after a failover. The session caches the result of every request it applied, Ok or
//! Err, so a retry gets the first answer and is not applied again. The client also sends the
//! lowest number it has no answer for yet (`first_unacked`): results below it are dropped, and
//! a request below it that is no longer cached is refused rather than applied a second time.
//! A session caches at most [`MAX_CACHED_RESULTS`] results; beyond that requests are refused, so
//! a client that never acknowledges cannot grow the state without bound. The cache goes with
//! the session.

use super::tree::StateMachine;
use super::{ApplyCtx, Command, Outcome, RequestId, StateError};

/// Unacknowledged results a session may hold.
pub const MAX_CACHED_RESULTS: usize = 10_000;

impl StateMachine {
    /// Applies one committed command. On error nothing changed.
    pub fn apply(&mut self, ctx: &ApplyCtx, cmd: &Command) -> Result<Outcome, StateError> {
        self.apply_request(ctx, None, cmd)
    }

    /// Applies a committed command once per request: with `req`, a request this session already
    /// applied answers its cached result and changes nothing else. `req` must name a live
    /// session (else SessionExpired), the same one the command names, if it names one.
    ///
    /// The refusals of the cache itself (a stale or one-too-many request) are not cached, but
    /// the acknowledgement `first_unacked` they carry is taken into account all the same.
    pub fn apply_request(
        &mut self,
        ctx: &ApplyCtx,
        req: Option<&RequestId>,
        cmd: &Command,
    ) -> Result<Outcome, StateError> {
        self.applying_for = req.map_or(0, |r| r.session);
        let Some(req) = req else {
            return self.execute(ctx, cmd);
        };
        let session = self.live_session(req.session)?;
        if cmd.session().is_some_and(|s| s != req.session) {
            return Err(StateError::InvalidArgument(format!(
                "request of session {} for another session",
                req.session
            )));
        }
        if req.first_unacked > session.acked_below {
            self.acknowledge(req.session, req.first_unacked);
        }
        let session = &self.sessions[&req.session];
        if let Some(cached) = session.responses.get(&req.seq) {
            return cached.clone();
        }
        if req.seq < session.acked_below {
            return Err(StateError::InvalidArgument(format!(
                "request {} was acknowledged already",
                req.seq
            )));
        }
        if session.responses.len() >= MAX_CACHED_RESULTS {
            return Err(StateError::InvalidArgument(
                "too many unacknowledged requests".into(),
            ));
        }
        let result = self.execute(ctx, cmd);
        // Ending its own session takes the cache with it: a retry answers SessionExpired.
        if self.sessions.contains_key(&req.session) {
            self.session_mut(req.session)
                .responses
                .insert(req.seq, result.clone());
            self.dirty_responses.insert((req.session, req.seq));
        }
        result
    }

    /// Whether `req` was applied already and its result is cached: a retry gets that result
    /// whatever the state is now, so checks of the current state (quotas) must not refuse it.
    pub fn answered(&self, req: &RequestId) -> bool {
        self.sessions
            .get(&req.session)
            .is_some_and(|s| s.responses.contains_key(&req.seq))
    }

    /// Drops the cached results below `first_unacked`.
    fn acknowledge(&mut self, id: u64, first_unacked: u64) {
        let session = self.session_mut(id);
        session.acked_below = first_unacked;
        let kept = session.responses.split_off(&first_unacked);
        let dropped = std::mem::replace(&mut session.responses, kept);
        self.dirty_responses
            .extend(dropped.into_keys().map(|seq| (id, seq)));
    }
}
