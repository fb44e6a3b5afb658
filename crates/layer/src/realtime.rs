//! Layers over [`Realtime`].
//!
//! The calls of [`Realtime`] itself go through the layer (opening a
//! channel, subscribing to row changes); the [`Channel`] handles it returns
//! are the provider's own.

use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::{Health, ProviderInfo, Result};
use truststream_core_realtime::{
    ChangeSpec, Channel, ChannelOptions, Handler, Realtime, RealtimeCapabilities, RowChange,
    Subscription,
};

use crate::around::{copy_clone, health_through, through, Access, Around, Interface, Op};
use crate::Generic;

/// A layer over [`Realtime`]: every method defaults to the same method of
/// `next`. Wrap a provider with [`LayeredRealtime`]; generic layers get this
/// through [`Generic`].
#[allow(missing_docs)] // each method is the `Realtime` method of that name
#[async_trait]
pub trait RealtimeLayer: Send + Sync + 'static {
    fn info(&self, next: &dyn Realtime) -> ProviderInfo {
        next.info()
    }
    fn capabilities(&self, next: &dyn Realtime) -> RealtimeCapabilities {
        next.capabilities()
    }
    async fn health(&self, next: &dyn Realtime) -> Health {
        next.health().await
    }
    async fn close(&self, next: &dyn Realtime) -> Result<()> {
        next.close().await
    }
    async fn channel(
        &self,
        next: &dyn Realtime,
        name: &str,
        options: ChannelOptions,
    ) -> Result<Arc<dyn Channel>> {
        next.channel(name, options).await
    }
    async fn subscribe_changes(
        &self,
        next: &dyn Realtime,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> Result<Subscription> {
        next.subscribe_changes(spec, handler).await
    }
}

/// A [`Realtime`] provider with a layer over it (itself a `Realtime`).
pub struct LayeredRealtime<L: ?Sized> {
    inner: Arc<dyn Realtime>,
    layer: Arc<L>,
}

impl<L: RealtimeLayer + ?Sized> LayeredRealtime<L> {
    /// `layer` over `inner`.
    pub fn new(inner: Arc<dyn Realtime>, layer: Arc<L>) -> Self {
        LayeredRealtime { inner, layer }
    }

    /// The provider (or layer) below.
    pub fn inner(&self) -> &Arc<dyn Realtime> {
        &self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &Arc<L> {
        &self.layer
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<L: RealtimeLayer + ?Sized> Realtime for LayeredRealtime<L> {
    fn info(&self) -> ProviderInfo {
        self.layer.info(&*self.inner)
    }
    fn capabilities(&self) -> RealtimeCapabilities {
        self.layer.capabilities(&*self.inner)
    }
    async fn health(&self) -> Health {
        self.layer.health(&*self.inner).await
    }
    async fn close(&self) -> Result<()> {
        self.layer.close(&*self.inner).await
    }
    async fn channel(&self, name: &str, options: ChannelOptions) -> Result<Arc<dyn Channel>> {
        self.layer.channel(&*self.inner, name, options).await
    }
    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> Result<Subscription> {
        self.layer
            .subscribe_changes(&*self.inner, spec, handler)
            .await
    }
}

#[async_trait]
impl<A: Around + ?Sized> RealtimeLayer for Generic<A> {
    async fn health(&self, next: &dyn Realtime) -> Health {
        let op = Op {
            interface: Interface::Realtime,
            provider: next.info().name,
            method: "health",
            access: Access::Admin,
            target: None,
            idempotent: true,
            replayable: true,
        };
        health_through(&*self.0, op, || next.health()).await
    }
    async fn channel(
        &self,
        next: &dyn Realtime,
        name: &str,
        options: ChannelOptions,
    ) -> Result<Arc<dyn Channel>> {
        let op = Op {
            interface: Interface::Realtime,
            provider: next.info().name,
            method: "channel",
            access: Access::Stream,
            target: Some(name),
            idempotent: true,
            replayable: true,
        };
        through(&*self.0, op, options, copy_clone, |options| {
            next.channel(name, options)
        })
        .await
    }
    async fn subscribe_changes(
        &self,
        next: &dyn Realtime,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> Result<Subscription> {
        let table = spec.table.clone();
        let op = Op {
            interface: Interface::Realtime,
            provider: next.info().name,
            method: "subscribe_changes",
            access: Access::Stream,
            target: Some(&table),
            idempotent: true,
            replayable: true,
        };
        through(
            &*self.0,
            op,
            (spec, handler),
            copy_clone,
            |(spec, handler)| next.subscribe_changes(spec, handler),
        )
        .await
    }
}
