//! Layers over [`Auth`].

use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::{Health, ProviderInfo, Result};
use truststream_core_auth::{
    Auth, AuthCapabilities, Principal, Session, SessionInfo, SignIn, SignUp, User, UserUpdate,
};

use crate::around::{
    copy_clone, copy_unit, health_through, through, Access, Around, Interface, Op,
};
use crate::Generic;

/// A layer over [`Auth`]: every method defaults to the same method of
/// `next`, so a layer overrides only what it changes. Wrap a provider with
/// [`LayeredAuth`]; generic layers get this through [`Generic`].
#[allow(missing_docs)] // each method is the `Auth` method of that name
#[async_trait]
pub trait AuthLayer: Send + Sync + 'static {
    fn info(&self, next: &dyn Auth) -> ProviderInfo {
        next.info()
    }
    fn capabilities(&self, next: &dyn Auth) -> AuthCapabilities {
        next.capabilities()
    }
    async fn health(&self, next: &dyn Auth) -> Health {
        next.health().await
    }
    async fn close(&self, next: &dyn Auth) -> Result<()> {
        next.close().await
    }
    async fn sign_up(&self, next: &dyn Auth, request: SignUp) -> Result<Session> {
        next.sign_up(request).await
    }
    async fn sign_in(&self, next: &dyn Auth, request: SignIn) -> Result<Session> {
        next.sign_in(request).await
    }
    async fn sign_out(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        next.sign_out(principal).await
    }
    async fn sign_out_everywhere(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        next.sign_out_everywhere(principal).await
    }
    async fn sign_out_others(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        next.sign_out_others(principal).await
    }
    async fn get_user(&self, next: &dyn Auth, principal: &Principal) -> Result<User> {
        next.get_user(principal).await
    }
    async fn get_session(&self, next: &dyn Auth, principal: &Principal) -> Result<SessionInfo> {
        next.get_session(principal).await
    }
    async fn refresh_session(&self, next: &dyn Auth, refresh_token: &str) -> Result<Session> {
        next.refresh_session(refresh_token).await
    }
    async fn validate_token(&self, next: &dyn Auth, access_token: &str) -> Result<Principal> {
        next.validate_token(access_token).await
    }
    async fn get_user_roles(&self, next: &dyn Auth, principal: &Principal) -> Result<Vec<String>> {
        next.get_user_roles(principal).await
    }
    async fn has_permission(
        &self,
        next: &dyn Auth,
        principal: &Principal,
        permission: &str,
    ) -> Result<bool> {
        next.has_permission(principal, permission).await
    }
    async fn update_user(
        &self,
        next: &dyn Auth,
        principal: &Principal,
        update: UserUpdate,
    ) -> Result<User> {
        next.update_user(principal, update).await
    }
    fn public_keys(&self, next: &dyn Auth) -> serde_json::Value {
        next.public_keys()
    }
}

/// An [`Auth`] provider with a layer over it (itself an `Auth`).
pub struct LayeredAuth<L: ?Sized> {
    inner: Arc<dyn Auth>,
    layer: Arc<L>,
}

impl<L: AuthLayer + ?Sized> LayeredAuth<L> {
    /// `layer` over `inner`.
    pub fn new(inner: Arc<dyn Auth>, layer: Arc<L>) -> Self {
        LayeredAuth { inner, layer }
    }

    /// The provider (or layer) below.
    pub fn inner(&self) -> &Arc<dyn Auth> {
        &self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &Arc<L> {
        &self.layer
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<L: AuthLayer + ?Sized> Auth for LayeredAuth<L> {
    fn info(&self) -> ProviderInfo {
        self.layer.info(&*self.inner)
    }
    fn capabilities(&self) -> AuthCapabilities {
        self.layer.capabilities(&*self.inner)
    }
    async fn health(&self) -> Health {
        self.layer.health(&*self.inner).await
    }
    async fn close(&self) -> Result<()> {
        self.layer.close(&*self.inner).await
    }
    async fn sign_up(&self, request: SignUp) -> Result<Session> {
        self.layer.sign_up(&*self.inner, request).await
    }
    async fn sign_in(&self, request: SignIn) -> Result<Session> {
        self.layer.sign_in(&*self.inner, request).await
    }
    async fn sign_out(&self, principal: &Principal) -> Result<()> {
        self.layer.sign_out(&*self.inner, principal).await
    }
    async fn sign_out_everywhere(&self, principal: &Principal) -> Result<()> {
        self.layer
            .sign_out_everywhere(&*self.inner, principal)
            .await
    }
    async fn sign_out_others(&self, principal: &Principal) -> Result<()> {
        self.layer.sign_out_others(&*self.inner, principal).await
    }
    async fn get_user(&self, principal: &Principal) -> Result<User> {
        self.layer.get_user(&*self.inner, principal).await
    }
    async fn get_session(&self, principal: &Principal) -> Result<SessionInfo> {
        self.layer.get_session(&*self.inner, principal).await
    }
    async fn refresh_session(&self, refresh_token: &str) -> Result<Session> {
        self.layer
            .refresh_session(&*self.inner, refresh_token)
            .await
    }
    async fn validate_token(&self, access_token: &str) -> Result<Principal> {
        self.layer.validate_token(&*self.inner, access_token).await
    }
    async fn get_user_roles(&self, principal: &Principal) -> Result<Vec<String>> {
        self.layer.get_user_roles(&*self.inner, principal).await
    }
    async fn has_permission(&self, principal: &Principal, permission: &str) -> Result<bool> {
        self.layer
            .has_permission(&*self.inner, principal, permission)
            .await
    }
    async fn update_user(&self, principal: &Principal, update: UserUpdate) -> Result<User> {
        self.layer
            .update_user(&*self.inner, principal, update)
            .await
    }
    fn public_keys(&self) -> serde_json::Value {
        self.layer.public_keys(&*self.inner)
    }
}

fn op(next: &dyn Auth, method: &'static str, access: Access, idempotent: bool) -> Op<'static> {
    Op {
        interface: Interface::Auth,
        provider: next.info().name,
        method,
        access,
        target: None,
        idempotent,
        replayable: true,
    }
}

#[async_trait]
impl<A: Around + ?Sized> AuthLayer for Generic<A> {
    async fn health(&self, next: &dyn Auth) -> Health {
        let op = Op {
            interface: Interface::Auth,
            provider: next.info().name,
            method: "health",
            access: Access::Admin,
            target: None,
            idempotent: true,
            replayable: true,
        };
        health_through(&*self.0, op, || next.health()).await
    }
    async fn sign_up(&self, next: &dyn Auth, request: SignUp) -> Result<Session> {
        let op = op(next, "sign_up", Access::Write, false);
        through(&*self.0, op, request, copy_clone, |r| next.sign_up(r)).await
    }
    async fn sign_in(&self, next: &dyn Auth, request: SignIn) -> Result<Session> {
        // A repeated sign-in opens a second session and counts twice
        // against the account's failure limit.
        let op = op(next, "sign_in", Access::Write, false);
        through(&*self.0, op, request, copy_clone, |r| next.sign_in(r)).await
    }
    async fn sign_out(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        let op = op(next, "sign_out", Access::Write, true);
        through(&*self.0, op, (), copy_unit, |()| next.sign_out(principal)).await
    }
    async fn sign_out_everywhere(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        let op = op(next, "sign_out_everywhere", Access::Write, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.sign_out_everywhere(principal)
        })
        .await
    }
    async fn sign_out_others(&self, next: &dyn Auth, principal: &Principal) -> Result<()> {
        // Ending the same other sessions again changes nothing more.
        let op = op(next, "sign_out_others", Access::Write, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.sign_out_others(principal)
        })
        .await
    }
    async fn get_user(&self, next: &dyn Auth, principal: &Principal) -> Result<User> {
        let op = op(next, "get_user", Access::Read, true);
        through(&*self.0, op, (), copy_unit, |()| next.get_user(principal)).await
    }
    async fn get_session(&self, next: &dyn Auth, principal: &Principal) -> Result<SessionInfo> {
        let op = op(next, "get_session", Access::Read, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.get_session(principal)
        })
        .await
    }
    async fn refresh_session(&self, next: &dyn Auth, refresh_token: &str) -> Result<Session> {
        let op = op(next, "refresh_session", Access::Write, false);
        through(&*self.0, op, (), copy_unit, |()| {
            next.refresh_session(refresh_token)
        })
        .await
    }
    async fn validate_token(&self, next: &dyn Auth, access_token: &str) -> Result<Principal> {
        let op = op(next, "validate_token", Access::Read, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.validate_token(access_token)
        })
        .await
    }
    async fn get_user_roles(&self, next: &dyn Auth, principal: &Principal) -> Result<Vec<String>> {
        let op = op(next, "get_user_roles", Access::Read, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.get_user_roles(principal)
        })
        .await
    }
    async fn has_permission(
        &self,
        next: &dyn Auth,
        principal: &Principal,
        permission: &str,
    ) -> Result<bool> {
        let op = op(next, "has_permission", Access::Read, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.has_permission(principal, permission)
        })
        .await
    }
    async fn update_user(
        &self,
        next: &dyn Auth,
        principal: &Principal,
        update: UserUpdate,
    ) -> Result<User> {
        // Setting the same email, password and metadata again leaves the
        // same user: a retry after a lost answer is harmless.
        let op = op(next, "update_user", Access::Write, true);
        through(&*self.0, op, update, copy_clone, |u| {
            next.update_user(principal, u)
        })
        .await
    }
}
