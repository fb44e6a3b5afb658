//! In-process channel handles of a hub-mode provider: calls go straight to
//! the hub's engine, and the handle is a member like any WebSocket client
//! (same topics, same presence, same fan-out).

use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::Error;
use truststream_core_realtime::{
    not_joined, presence_key, validate_broadcast, Channel, ChannelOptions, Handler, Message,
    PresenceEvent, PresenceState, RtResult, Subscription, Value,
};

use crate::deliver::{Delivery, Inbox, LocalSink, Queue};
use crate::hub::{lock, new_key, BroadcastPayload, Hub, Member, MemberId};
use truststream_core_realtime::access::Viewer;

pub(crate) struct LocalChannel {
    hub: Arc<Hub>,
    topic: String,
    options: ChannelOptions,
    key: String,
    inbox: Arc<Inbox>,
    member: std::sync::Mutex<Option<(MemberId, Arc<Queue>)>>,
}

impl LocalChannel {
    pub(crate) fn new(hub: &Arc<Hub>, name: &str, options: ChannelOptions) -> RtResult<Self> {
        hub.check_open()?;
        let key = presence_key(options.presence_key.as_deref(), new_key)?;
        Ok(LocalChannel {
            hub: hub.clone(),
            topic: format!("realtime:{name}"),
            options,
            key,
            inbox: Inbox::new(name),
            member: std::sync::Mutex::new(None),
        })
    }

    /// The member id while the hub still has it.
    fn joined_id(&self) -> Option<MemberId> {
        let id = lock(&self.member).as_ref().map(|(id, _)| *id)?;
        self.hub.is_member(&self.topic, id).then_some(id)
    }

    /// The error for an operation that needs a joined handle.
    fn not_joined(&self, op: &str) -> Error {
        if let Err(e) = self.hub.check_open() {
            return e;
        }
        not_joined(&self.inbox.channel, op, self.inbox.removal().as_deref())
    }

    /// Runs a hub call that needs membership; "not a member" becomes the
    /// handle's own explanation.
    fn member_call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(MemberId) -> RtResult<T>,
    ) -> RtResult<T> {
        let Some(id) = self.joined_id() else {
            return Err(self
                .not_joined(op.rsplit('.').next().unwrap_or(op))
                .with_operation(op));
        };
        f(id).map_err(|e| {
            if self.joined_id().is_none() {
                self.not_joined(op).with_operation(op)
            } else {
                e.with_operation(op)
            }
        })
    }

    fn leave_now(&self) {
        let taken = lock(&self.member).take();
        if let Some((id, queue)) = taken {
            queue.deactivate();
            self.hub.leave(&self.topic, id);
        }
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        self.leave_now();
    }
}

#[async_trait]
impl Channel for LocalChannel {
    fn name(&self) -> &str {
        &self.inbox.channel
    }

    async fn join(&self) -> RtResult<()> {
        let op = "channel.join";
        if self.joined_id().is_some() {
            return Ok(());
        }
        // A stale membership (removed by the hub): drop it first.
        self.leave_now();
        let queue = Queue::start(
            &self.inbox,
            self.hub.config.member_queue_capacity,
            &self.hub.counters,
        );
        let member = Member {
            sink: Arc::new(LocalSink(queue.clone())),
            join_ref: String::new(),
            owner: 0,
            broadcast_self: self.options.broadcast_self,
            key: self.key.clone(),
            meta: None,
            bindings: Vec::new(),
            viewer: Viewer::Anonymous,
            scope: truststream_core_realtime::access::scope_of(None),
            _feeds: Vec::new(),
        };
        let q = queue.clone();
        let id = self
            .hub
            .join(&self.topic, member, move |_, state| {
                q.offer(Delivery::State(Arc::new(state.clone())))
            })
            .map_err(|e| {
                queue.deactivate();
                e.with_operation(op)
            })?;
        self.inbox.clear_removal();
        *lock(&self.member) = Some((id, queue));
        Ok(())
    }

    async fn leave(&self) -> RtResult<()> {
        self.leave_now();
        Ok(())
    }

    fn is_joined(&self) -> bool {
        self.joined_id().is_some()
    }

    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription {
        self.inbox.on(event, handler)
    }

    async fn send(&self, event: &str, payload: Value) -> RtResult<()> {
        let op = "channel.send";
        validate_broadcast(event, &payload, self.hub.config.max_payload_bytes)
            .map_err(|e| e.with_operation(op))?;
        // Queued for every member before returning: in process, this is
        // also the `ack` point.
        self.member_call(op, |id| {
            self.hub.broadcast(
                &self.topic,
                id,
                event,
                BroadcastPayload::Json(payload),
                None,
            )
        })
    }

    async fn track(&self, state: Value) -> RtResult<()> {
        self.member_call("channel.track", |id| self.hub.track(&self.topic, id, state))
    }

    async fn untrack(&self) -> RtResult<()> {
        match self.joined_id() {
            Some(id) => self
                .hub
                .untrack(&self.topic, id)
                .map_err(|e| e.with_operation("channel.untrack")),
            // Not a member: nothing is tracked.
            None => Ok(()),
        }
    }

    async fn presence_state(&self) -> RtResult<PresenceState> {
        self.member_call("channel.presence_state", |id| {
            self.hub.presence(&self.topic, id)
        })
    }

    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription {
        self.inbox.on_presence(handler)
    }
}
