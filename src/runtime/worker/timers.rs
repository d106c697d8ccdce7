//! Timers: one deadline per connection (`Conn::deadline`, a wheel tick), armed on the
//! one-second hashed wheel; [`Worker::after`] is what keeps every timeout from firing early.
//! What a deadline means depends on the phase: head and keep-alive timeouts, the broker's ack
//! timeout, WebSocket pings and pong timeouts, stream heartbeats, poll and Bayeux holds, the
//! close timeout.

use super::Worker;
use super::conn_io::{Dead, Handled};
use crate::proto::http;
use crate::proto::ws::frame::{self, OP_PING, close_code};
use crate::pubsub::hub::Gap;
use crate::runtime::conn::{Phase, flag};
use crate::runtime::timer::Key;
use crate::stats::WorkerStats;

impl Worker {
    /// The wheel tick by which `secs` whole seconds have surely passed: a timeout armed now
    /// fires after more than `secs` and at most `secs + 1` seconds (the wheel's resolution).
    /// `tick` is the current second plus one, so now lies anywhere in `[tick - 1, tick)`, and
    /// tick `t` is processed once `t - 1` seconds have elapsed: `tick + secs + 1` is the first
    /// tick that cannot come early.
    pub(super) fn after(&self, secs: u32) -> u32 {
        self.tick.saturating_add(secs).saturating_add(1)
    }

    /// Sets the connection's deadline to `at` (0: none) and makes sure a wheel entry fires by
    /// then. A subscription's token expiry (`Conn::expires`) caps it: no deadline lies beyond
    /// the token's end, and `at` = 0 leaves the expiry as the deadline.
    pub(super) fn set_deadline(&mut self, idx: usize, at: u32) {
        let conn = &mut self.conns[idx];
        let at = match (at, conn.expires) {
            (0, e) | (e, 0) => e,
            (a, e) => a.min(e),
        };
        conn.deadline = at;
        if at == 0 {
            return;
        }
        if conn.timer_at == 0 || at < conn.timer_at {
            conn.timer_at = self.wheel.arm(at, (idx as u32, conn.generation));
        }
    }

    pub(super) fn fire_timers(&mut self) {
        let mut due: Vec<Key> = Vec::new();
        let conns = &mut self.conns;
        let tick = self.tick;
        let wheel = &mut self.wheel;
        let mut rearm: Vec<(Key, u32)> = Vec::new();
        wheel.advance(tick, |at, (idx, generation)| {
            let Some(c) = conns.get_mut(idx as usize) else {
                return;
            };
            if c.generation != generation || c.timer_at != at {
                return; // stale entry
            }
            c.timer_at = 0;
            if c.deadline == 0 {
                return;
            }
            if c.deadline > tick {
                rearm.push(((idx, generation), c.deadline));
            } else {
                due.push((idx, generation));
            }
        });
        for ((idx, generation), at) in rearm {
            let c = &mut self.conns[idx as usize];
            c.timer_at = self.wheel.arm(at, (idx, generation));
        }
        for (idx, generation) in due {
            let idx = idx as usize;
            if self.is_live(idx, generation) {
                let r = self.on_timeout(idx);
                self.settle(idx, r);
            }
        }
    }

    pub(super) fn on_timeout(&mut self, idx: usize) -> Handled {
        let conn = &mut self.conns[idx];
        conn.deadline = 0;
        if conn.expires != 0 && self.tick >= conn.expires {
            return self.token_expired(idx);
        }
        match conn.phase {
            Phase::Http => {
                if conn.has(flag::ACK_WAIT) {
                    self.publish_acked(idx, None, true)
                } else if self.tls_handshaking(idx) {
                    // No 408 can be sent before the handshake is done.
                    WorkerStats::add(&self.stats.tls_handshake_timeouts, 1);
                    Err(Dead)
                } else if self.conns[idx].has(flag::IN_REQUEST) {
                    WorkerStats::add(&self.stats.head_timeouts, 1);
                    WorkerStats::add(&self.stats.http_errors, 1);
                    let resp = http::response(
                        &self.date,
                        408,
                        "Request Timeout",
                        "text/plain; charset=utf-8",
                        "",
                        b"request head not completed in time\n",
                        false,
                    );
                    self.respond(idx, resp, false)
                } else {
                    Err(Dead) // idle keep-alive connection
                }
            }
            Phase::WsSub | Phase::WsEcho => {
                if conn.has(flag::PING_OUT) {
                    WorkerStats::add(&self.stats.ws_pong_timeouts, 1);
                    self.begin_close(
                        idx,
                        Some(frame::close_frame(close_code::GOING_AWAY, "ping timeout")),
                    )
                } else {
                    conn.set(flag::PING_OUT);
                    let at = self.after(self.cfg.ws_pong_timeout);
                    self.set_deadline(idx, at);
                    self.send(idx, &[frame::frame(OP_PING, b"")], false)
                }
            }
            Phase::Sse | Phase::Stream => self.heartbeat(idx),
            // Its event each second is its heartbeat; no timer is armed for it. Socket.IO
            // connections' timers are their session's (`socketio.rs`, in milliseconds).
            Phase::Dashboard | Phase::SioPoll => Ok(()),
            Phase::SioWs => self.sio_ws_timeout(idx),
            Phase::Poll => {
                WorkerStats::add(&self.stats.poll_timeouts, 1);
                self.answer_held(idx, &[], Gap::None)
            }
            Phase::BayeuxPoll => self.bayeux_end_hold(idx, None),
            Phase::BayeuxWs => self.bayeux_ws_timeout(idx),
            Phase::Closing => {
                if conn.has(flag::WAS_WS) {
                    WorkerStats::add(&self.stats.close_timeouts, 1);
                }
                Err(Dead)
            }
        }
    }
}
