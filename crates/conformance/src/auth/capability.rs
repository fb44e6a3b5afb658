//! Capabilities that tell the truth: one case per flag that gates a call.
//!
//! Each case makes the call the flag is about. A provider that reports the
//! flag `true` must serve it; one that reports `false` must answer
//! [`ErrorKind::Unsupported`] and change nothing (no user created, no
//! session rotated). The cases run whatever the flag says.
//! `revocation_checked` and `external_tokens` gate no call: they say which
//! tokens validate, and the cases that need them check that.

use truststream_core::ErrorKind;
use truststream_core_auth::{Principal, SignIn, SignUp};

use super::{expect_session_ended, sign_up, unique_email, validate, AuthFixture, PASSWORD};
use crate::{ensure, expect_kind, CaseResult, Failure};

/// `sign_up` creates the user, or is `Unsupported` and creates nobody.
pub(super) async fn sign_up_flag(fx: AuthFixture) -> CaseResult {
    let caps = fx.auth.capabilities();
    let email = unique_email();
    if caps.sign_up {
        let s = sign_up(&fx, &email).await?;
        validate(&fx, &s).await?;
    } else {
        expect_kind(
            fx.auth.sign_up(SignUp::new(&email, PASSWORD)).await,
            ErrorKind::Unsupported,
            "sign_up without sign_up",
        )?;
        if caps.password_sign_in {
            expect_kind(
                fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await,
                ErrorKind::Unauthenticated,
                "signing in as a user a refused sign_up would have created",
            )?;
        }
    }
    Ok(())
}

/// `sign_in` opens a session, or is `Unsupported`.
pub(super) async fn password_sign_in(fx: AuthFixture) -> CaseResult {
    let caps = fx.auth.capabilities();
    let email = unique_email();
    if caps.sign_up {
        sign_up(&fx, &email).await?;
    }
    let r = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await;
    match (caps.password_sign_in, caps.sign_up) {
        (true, true) => {
            let s = r?;
            validate(&fx, &s).await?;
        }
        (true, false) => expect_kind(r, ErrorKind::Unauthenticated, "sign_in of nobody")?,
        (false, _) => expect_kind(
            r,
            ErrorKind::Unsupported,
            "sign_in without password_sign_in",
        )?,
    }
    Ok(())
}

/// `refresh_session` rotates the session, or is `Unsupported` and the
/// session stays as it was.
pub(super) async fn refresh(fx: AuthFixture) -> CaseResult {
    let caps = fx.auth.capabilities();
    if !caps.sign_up {
        let r = fx.auth.refresh_session("not-a-refresh-token").await;
        let kind = if caps.refresh {
            ErrorKind::Unauthenticated
        } else {
            ErrorKind::Unsupported
        };
        return expect_kind(r, kind, "refresh_session of a made-up token");
    }
    let s = sign_up(&fx, &unique_email()).await?;
    let r = fx.auth.refresh_session(s.refresh_token.expose()).await;
    if caps.refresh {
        let next = r?;
        ensure!(
            next.refresh_token.expose() != s.refresh_token.expose(),
            "refresh rotates the refresh token"
        );
        validate(&fx, &next).await?;
    } else {
        expect_kind(r, ErrorKind::Unsupported, "refresh_session without refresh")?;
        validate(&fx, &s).await?;
    }
    Ok(())
}

/// `sign_out_others` ends the user's other sessions and keeps the caller's,
/// or is `Unsupported` and ends none.
pub(super) async fn sign_out_others(fx: AuthFixture) -> CaseResult {
    let caps = fx.auth.capabilities();
    if !(caps.sign_up && caps.password_sign_in) {
        if caps.sign_out_others {
            return Err(Failure::skip(
                "sign_out_others is reported, but without sign_up and password_sign_in the case cannot open the sessions it would end",
            ));
        }
        // No sessions to open: a made-up principal must still be refused
        // as unsupported, not as a bad token.
        let claims = serde_json::json!({
            "sub": uuid::Uuid::new_v4().to_string(),
            "session_id": uuid::Uuid::new_v4().to_string(),
            "exp": chrono::Utc::now().timestamp() + 3600,
        });
        let serde_json::Value::Object(claims) = claims else {
            return Err(Failure::new("claims are an object"));
        };
        let p = Principal::from_claims(claims)?;
        return expect_kind(
            fx.auth.sign_out_others(&p).await,
            ErrorKind::Unsupported,
            "sign_out_others without sign_out_others",
        );
    }
    let email = unique_email();
    let s1 = sign_up(&fx, &email).await?;
    let p1 = validate(&fx, &s1).await?;
    let s2 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let r = fx.auth.sign_out_others(&p1).await;
    if caps.sign_out_others {
        r?;
        validate(&fx, &s1).await?;
        expect_session_ended(&fx, &s2, "the other session").await?;
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "sign_out_others without sign_out_others",
        )?;
        // Nothing was ended.
        validate(&fx, &s1).await?;
        validate(&fx, &s2).await?;
        if caps.refresh {
            let next = fx
                .auth
                .refresh_session(s2.refresh_token.expose())
                .await
                .map_err(|e| {
                    Failure::new(format!(
                        "a refused sign_out_others ended the other session: {e}"
                    ))
                })?;
            validate(&fx, &next).await?;
        }
    }
    Ok(())
}
