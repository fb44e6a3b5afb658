//! The server mode's in-process channel handles: members of the same
//! channels as the Socket.IO clients.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use truststream_core_realtime::{
    check_json_size, not_joined, Channel, ChannelOptions, Handler, Message, PresenceEvent,
    PresenceState, RtResult, Subscription,
};

use crate::handlers::Handlers;
use crate::hub::{lock, Delivery, Hub, Sink};

struct Joined {
    id: u64,
    pump: tokio::task::JoinHandle<()>,
    removed: Arc<Mutex<Option<String>>>,
}

/// An in-process handle on a channel of the server.
pub(crate) struct LocalChannel {
    hub: Arc<Hub>,
    name: String,
    options: ChannelOptions,
    joined: Mutex<Option<Joined>>,
    handlers: Arc<Handlers>,
}

impl LocalChannel {
    pub(crate) fn new(hub: &Arc<Hub>, name: &str, options: ChannelOptions) -> RtResult<Self> {
        if let Some(key) = options.presence_key.as_deref() {
            truststream_core_realtime::validate_presence_key(key)?;
        }
        Ok(LocalChannel {
            hub: hub.clone(),
            name: name.to_string(),
            options,
            joined: Mutex::new(None),
            handlers: Arc::new(Handlers::default()),
        })
    }

    /// The member id when joined; the error names why the server removed
    /// the handle when it did.
    fn member(&self, op: &str) -> RtResult<u64> {
        let joined = lock(&self.joined);
        match joined.as_ref() {
            Some(j) => match lock(&j.removed).as_deref() {
                None => Ok(j.id),
                Some(reason) => Err(not_joined(&self.name, op, Some(reason))),
            },
            None => Err(not_joined(&self.name, op, None)),
        }
    }

    fn leave_now(&self) {
        let joined = lock(&self.joined).take();
        if let Some(j) = joined {
            self.hub.leave(&self.name, j.id);
            j.pump.abort();
        }
    }
}

#[async_trait]
impl Channel for LocalChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn join(&self) -> RtResult<()> {
        if self.member("join").is_ok() {
            return Ok(());
        }
        // A handle the server removed joins again from scratch.
        self.leave_now();
        let id = self.hub.next_id();
        let (tx, mut rx) = mpsc::channel(self.hub.config.member_queue_capacity);
        let handlers = self.handlers.clone();
        let pump = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                match d {
                    Delivery::Message(m) => handlers.message(&m),
                    Delivery::Presence(p) => handlers.presence(&p),
                }
            }
        });
        let removed = Arc::new(Mutex::new(None));
        let sink = Sink::Local {
            tx,
            removed: removed.clone(),
        };
        *lock(&self.joined) = Some(Joined { id, pump, removed });
        let joined = self.hub.join(
            &self.name,
            id,
            sink,
            self.options.broadcast_self,
            self.options.presence_key.as_deref(),
        );
        if let Err(e) = joined {
            self.leave_now();
            return Err(e);
        }
        Ok(())
    }

    async fn leave(&self) -> RtResult<()> {
        self.leave_now();
        Ok(())
    }

    fn is_joined(&self) -> bool {
        self.member("is_joined").is_ok()
    }

    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription {
        self.handlers.on(event, handler)
    }

    async fn send(&self, event: &str, payload: Value) -> RtResult<()> {
        let id = self.member("send")?;
        self.hub.broadcast(&self.name, id, event, payload)
    }

    async fn track(&self, state: Value) -> RtResult<()> {
        let id = self.member("track")?;
        check_json_size(
            &state,
            self.hub.config.max_payload_bytes,
            "the presence state",
        )?;
        self.hub.set_presence(&self.name, id, Some(state), "track")
    }

    async fn untrack(&self) -> RtResult<()> {
        match self.member("untrack") {
            Ok(id) => self.hub.set_presence(&self.name, id, None, "untrack"),
            // Nothing is tracked by a handle that is not a member.
            Err(_) => Ok(()),
        }
    }

    async fn presence_state(&self) -> RtResult<PresenceState> {
        Ok(self.hub.presence_state(&self.name))
    }

    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription {
        self.handlers.on_presence(handler)
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        self.leave_now();
    }
}
