//! User-interactive authentication: flows, sessions and completed stages.

use ruma::{
    api::client::uiaa::{AuthData, UserIdentifier},
    UserId,
};
use serde_json::{json, Value};

use super::{random_string, Accounts};
use crate::{
    error::{MatrixError, Result},
    storage::accounts as repo,
};

pub const PASSWORD: &str = "m.login.password";
pub const DUMMY: &str = "m.login.dummy";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// What the stages of a request are checked against.
pub struct UiaContext<'a> {
    /// The account whose password `m.login.password` must match.
    pub user: Option<&'a UserId>,
    /// Valid registration tokens.
    pub registration_tokens: &'a [String],
    /// What the request does (e.g. `delete_device ABC`): a session serves one operation only.
    pub operation: &'a str,
    /// Keep the session once complete (registration: a retry of the request that completed
    /// it is answered for the user it registered).
    pub keep_completed: bool,
}

/// A password stage that proved another account than the one acting: refused outright (403),
/// not answered with a new challenge.
const OTHER_USER: &str = "Requester and authenticated user do not match";

impl Accounts {
    /// Runs one round of user-interactive auth. Ok when a flow is complete; otherwise the 401
    /// the client must answer (flows, session, completed, and the stage's error if it failed).
    pub async fn user_interactive_auth(
        &self,
        auth: Option<&AuthData>,
        flows: &[&[&str]],
        context: UiaContext<'_>,
    ) -> Result<()> {
        let Some(auth) = auth else {
            return Err(self.challenge(flows, &random_string(24), &[], None, context.operation).await?);
        };
        let session = auth.session().map(str::to_owned).unwrap_or_else(|| random_string(24));
        let (mut completed, operation) = repo::uia_session(self.db.pool(), &session).await?.unwrap_or_default();
        if !operation.is_empty() && operation != context.operation {
            return Err(MatrixError::forbidden("Requested operation has changed during the UI authentication session"));
        }

        let stage_result = self.check_stage(auth, &context).await;
        match stage_result {
            Ok(stage) => {
                if !completed.iter().any(|s| s == stage) {
                    completed.push(stage.to_owned());
                }
            }
            Err(error) if error.message == OTHER_USER => return Err(error),
            Err(error) => return Err(self.challenge(flows, &session, &completed, Some(error), context.operation).await?),
        }
        let done = flows.iter().any(|flow| flow.iter().all(|stage| completed.iter().any(|c| c == stage)));
        if done {
            if context.keep_completed {
                repo::save_uia_session(self.db.pool(), &session, &completed, context.operation).await?;
            } else {
                repo::delete_uia_session(self.db.pool(), &session).await?;
            }
            Ok(())
        } else {
            Err(self.challenge(flows, &session, &completed, None, context.operation).await?)
        }
    }

    async fn check_stage(&self, auth: &AuthData, context: &UiaContext<'_>) -> Result<&'static str> {
        match auth {
            AuthData::Dummy(_) => Ok(DUMMY),
            AuthData::RegistrationToken(token) => {
                if context.registration_tokens.iter().any(|t| t == &token.token) {
                    Ok(REGISTRATION_TOKEN)
                } else {
                    Err(MatrixError::forbidden("Invalid registration token"))
                }
            }
            AuthData::Password(password) => {
                let Some(expected) = context.user else {
                    return Err(MatrixError::forbidden("Password authentication is not available here"));
                };
                let UserIdentifier::Matrix(identifier) = &password.identifier else {
                    return Err(MatrixError::forbidden("Only user identifiers are supported"));
                };
                let user_id = self.parse_login_user(&identifier.user)?;
                self.check_password(&user_id, &password.password).await?;
                if user_id != expected {
                    return Err(MatrixError::forbidden(OTHER_USER));
                }
                Ok(PASSWORD)
            }
            _ => Err(MatrixError::new(
                http::StatusCode::UNAUTHORIZED,
                "M_UNRECOGNIZED",
                "Unsupported authentication stage",
            )),
        }
    }

    /// The 401 UIA response. Without a failed stage it carries no errcode, as the spec shows.
    async fn challenge(
        &self,
        flows: &[&[&str]],
        session: &str,
        completed: &[String],
        failed: Option<MatrixError>,
        operation: &str,
    ) -> Result<MatrixError> {
        repo::save_uia_session(self.db.pool(), session, completed, operation).await?;
        let flows: Vec<Value> = flows.iter().map(|stages| json!({ "stages": stages })).collect();
        // Once the client has answered a stage, the stages done so far go with every 401,
        // even none (as Synapse: clients read the key).
        let answered = failed.is_some();
        let mut error = match failed {
            Some(failed) => MatrixError::new(http::StatusCode::UNAUTHORIZED, failed.errcode, failed.message),
            None => MatrixError::new(http::StatusCode::UNAUTHORIZED, "", ""),
        };
        error = error
            .with("flows", Value::Array(flows))
            .with("params", json!({}))
            .with("session", session.into());
        if answered || !completed.is_empty() {
            error = error.with("completed", json!(completed));
        }
        Ok(error)
    }
}
