//! The organization API under `/api/orgs`: organizations, members, teams, robots, roles, grants
//! and the audit log, as JSON (errors are the account API's [`ApiError`]s).
//!
//! | route | methods |
//! |---|---|
//! | `orgs` | GET (the caller's), POST `{"name"}` |
//! | `orgs/<org>` | GET, DELETE (`?force=true` deletes its repositories too) |
//! | `orgs/<org>/members`, `…/members/<user>` | GET; PUT `{"role"}`, DELETE |
//! | `orgs/<org>/teams`, `…/teams/<team>`, `…/teams/<team>/members/<user>` | GET, POST `{"name"}`; DELETE; PUT, DELETE |
//! | `orgs/<org>/robots`, `…/robots/<name>`, `…/robots/<name>/secret` | GET, POST `{"name","expires_in_days"}`; DELETE; POST (rotate) |
//! | `orgs/<org>/grants`, `…/grants/<id>` | GET, POST `{"principal","resource","actions"|"role"}`; DELETE |
//! | `orgs/<org>/roles`, `…/roles/<name>` | GET; PUT `{"actions"}`, DELETE |
//! | `orgs/<org>/audit` | GET (`?limit=`) |
//!
//! Who may do what is the [`Policy`](crate::auth::Policy)'s: reading an org needs membership,
//! changing it manage-org, deleting it (and making or unmaking owners) the owner role, granting
//! holding what is granted.

use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::account::{parse_json, ApiError, MAX_API_BODY};
use super::{json_response, Query, Registry};
use crate::auth::orgs::{self, Granted, Grantee, OrgError};
use crate::auth::permissions::{Permissions, Resource, Rule};
use crate::auth::Principal;
use crate::body::Body;

impl From<OrgError> for ApiError {
    fn from(error: OrgError) -> Self {
        match error {
            OrgError::Invalid(why) => ApiError::BadRequest(why),
            OrgError::NotFound(why) => ApiError::NotFound(why),
            OrgError::Conflict(why) => ApiError::Conflict(why),
            OrgError::Registry(e) => e.into(),
        }
    }
}

/// An endpoint below `/api/orgs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Orgs,
    Org(&'a str),
    Members(&'a str),
    Member(&'a str, &'a str),
    Teams(&'a str),
    Team(&'a str, &'a str),
    TeamMember(&'a str, &'a str, &'a str),
    Robots(&'a str),
    Robot(&'a str, &'a str),
    RobotSecret(&'a str, &'a str),
    Grants(&'a str),
    Grant(&'a str, &'a str),
    Roles(&'a str),
    Role(&'a str, &'a str),
    Audit(&'a str),
}

impl Endpoint<'_> {
    fn allow(self) -> &'static str {
        match self {
            Endpoint::Orgs | Endpoint::Teams(_) | Endpoint::Robots(_) | Endpoint::Grants(_) => {
                "GET, POST"
            }
            Endpoint::Org(_) => "GET, DELETE",
            Endpoint::Members(_) | Endpoint::Roles(_) | Endpoint::Audit(_) => "GET",
            Endpoint::Member(..) | Endpoint::TeamMember(..) | Endpoint::Role(..) => "PUT, DELETE",
            Endpoint::Team(..) | Endpoint::Robot(..) | Endpoint::Grant(..) => "DELETE",
            Endpoint::RobotSecret(..) => "POST",
        }
    }
}

/// The endpoint of a path below `/api/` starting with `orgs`; `None` for anything else.
fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let rest = path.strip_prefix("orgs")?;
    if rest.is_empty() {
        return Some(Endpoint::Orgs);
    }
    let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(match parts.as_slice() {
        [org] => Endpoint::Org(org),
        [org, "members"] => Endpoint::Members(org),
        [org, "members", user] => Endpoint::Member(org, user),
        [org, "teams"] => Endpoint::Teams(org),
        [org, "teams", team] => Endpoint::Team(org, team),
        [org, "teams", team, "members", user] => Endpoint::TeamMember(org, team, user),
        [org, "robots"] => Endpoint::Robots(org),
        [org, "robots", robot] => Endpoint::Robot(org, robot),
        [org, "robots", robot, "secret"] => Endpoint::RobotSecret(org, robot),
        [org, "grants"] => Endpoint::Grants(org),
        [org, "grants", id] => Endpoint::Grant(org, id),
        [org, "roles"] => Endpoint::Roles(org),
        [org, "roles", role] => Endpoint::Role(org, role),
        [org, "audit"] => Endpoint::Audit(org),
        _ => return None,
    })
}

fn ok(body: serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, body.to_string())
}

fn created(body: serde_json::Value) -> Response<Body> {
    json_response(StatusCode::CREATED, body.to_string())
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct NewRobot {
    name: String,
    expires_in_days: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Rotation {
    expires_in_days: Option<u64>,
}

#[derive(Deserialize)]
struct RoleChoice {
    role: String,
}

#[derive(Deserialize)]
struct ActionList {
    actions: Vec<String>,
}

#[derive(Deserialize)]
struct NewGrant {
    principal: String,
    resource: String,
    actions: Option<Vec<String>>,
    role: Option<String>,
}

fn permissions(names: &[String]) -> Result<Permissions, ApiError> {
    Permissions::parse_names(names.iter().map(String::as_str))
        .map_err(|bad| ApiError::BadRequest(format!("{bad:?} is not an action")))
}

/// Where the caller stands in one organization.
struct Standing {
    /// Their role as a member.
    role: Option<String>,
    /// Their rules there (role and grants).
    rules: Vec<Rule>,
}

impl Registry {
    /// `/api/orgs…` for a signed-in `principal` (the account API has authenticated it).
    pub(super) async fn org_api(
        &self,
        path: &str,
        request: Request<Body>,
        principal: &Principal,
    ) -> Option<Result<Response<Body>, ApiError>> {
        let endpoint = endpoint(path)?;
        Some(self.org_call(endpoint, request, principal).await)
    }

    async fn org_call(
        &self,
        endpoint: Endpoint<'_>,
        request: Request<Body>,
        principal: &Principal,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method().clone();
        let allowed = endpoint.allow().split(", ").any(|m| m == method.as_str());
        if !allowed {
            return Err(ApiError::MethodNotAllowed {
                allow: endpoint.allow(),
            });
        }
        if principal.robot {
            return Err(ApiError::Forbidden(
                "robot accounts push and pull; they never manage organizations".into(),
            ));
        }
        if !self.policy.may_manage_tokens(principal) {
            return Err(ApiError::Forbidden(
                "organizations are managed with the user's full rights: sign in with an unscoped \
                 access token"
                    .into(),
            ));
        }
        let address = super::token::client_address(&request);
        let query = Query::parse(request.uri().query());
        let ctx = self.org_context(principal, &address);
        let sql = self.ports.sql.as_ref();
        let body = if method == Method::GET || method == Method::DELETE {
            Vec::new()
        } else {
            request.into_body().collect(MAX_API_BODY).await?.to_vec()
        };

        // The organization's list and creation need no standing in one.
        if endpoint == Endpoint::Orgs {
            if method == Method::GET {
                let user = (!principal.admin).then_some(principal.name.as_str());
                return Ok(ok(json!({ "orgs": orgs::list(sql, user).await? })));
            }
            let new: Named = parse_json(&body)?;
            let org = orgs::create(&ctx, &new.name, Some(&principal.name)).await?;
            return Ok(created(
                json!({ "name": org.name, "created_at_ms": org.created_at_ms }),
            ));
        }

        let org = match endpoint {
            Endpoint::Orgs => return Err(ApiError::Internal("unreachable".into())),
            Endpoint::Org(o)
            | Endpoint::Members(o)
            | Endpoint::Member(o, _)
            | Endpoint::Teams(o)
            | Endpoint::Team(o, _)
            | Endpoint::TeamMember(o, _, _)
            | Endpoint::Robots(o)
            | Endpoint::Robot(o, _)
            | Endpoint::RobotSecret(o, _)
            | Endpoint::Grants(o)
            | Endpoint::Grant(o, _)
            | Endpoint::Roles(o)
            | Endpoint::Audit(o) => o,
            Endpoint::Role(o, _) => o,
        };
        let standing = self.standing(principal, org).await?;
        let is_member = standing.role.is_some() || principal.admin;
        if !is_member {
            // Non-members learn nothing, not even that the organization exists.
            return Err(ApiError::NotFound(format!("no organization {org}")));
        }
        let manages = self.policy.may_manage_org(principal, &standing.rules);
        let is_owner = principal.admin || standing.role.as_deref() == Some("owner");
        let needs = |granted: bool, what: &str| {
            if granted {
                Ok(())
            } else {
                Err(ApiError::Forbidden(format!("{what} of {org}")))
            }
        };

        match endpoint {
            Endpoint::Org(_) if method == Method::GET => {
                let info = orgs::get(sql, org, &principal.name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no organization {org}")))?;
                Ok(ok(json!(info)))
            }
            Endpoint::Org(_) => {
                needs(is_owner, "only owners may delete the organization")?;
                let force = query.get("force") == Some("true");
                let deleted = orgs::delete(&ctx, org, force).await?;
                Ok(ok(
                    json!({ "deleted": org, "repositories_deleted": deleted }),
                ))
            }
            Endpoint::Members(_) => Ok(ok(json!({ "members": orgs::members(sql, org).await? }))),
            Endpoint::Member(_, user) => {
                needs(manages, "managing members needs manage-org")?;
                let current = orgs::member_role(sql, org, user).await?;
                if method == Method::PUT {
                    let choice: RoleChoice = parse_json(&body)?;
                    let touches_owner =
                        choice.role == "owner" || current.as_deref() == Some("owner");
                    needs(
                        !touches_owner || is_owner,
                        "only owners make or unmake owners",
                    )?;
                    let member = orgs::set_member(&ctx, org, user, &choice.role).await?;
                    Ok(ok(json!(member)))
                } else {
                    needs(
                        current.as_deref() != Some("owner") || is_owner,
                        "only owners remove owners",
                    )?;
                    orgs::remove_member(&ctx, org, user).await?;
                    Ok(ok(json!({})))
                }
            }
            Endpoint::Teams(_) if method == Method::GET => {
                Ok(ok(json!({ "teams": orgs::teams(sql, org).await? })))
            }
            Endpoint::Teams(_) => {
                needs(manages, "managing teams needs manage-org")?;
                let new: Named = parse_json(&body)?;
                Ok(created(json!(
                    orgs::create_team(&ctx, org, &new.name).await?
                )))
            }
            Endpoint::Team(_, team) => {
                needs(manages, "managing teams needs manage-org")?;
                orgs::delete_team(&ctx, org, team).await?;
                Ok(ok(json!({})))
            }
            Endpoint::TeamMember(_, team, user) => {
                needs(manages, "managing teams needs manage-org")?;
                if method == Method::PUT {
                    orgs::add_team_member(&ctx, org, team, user).await?;
                    Ok(ok(json!({ "team": team, "user": user })))
                } else {
                    orgs::remove_team_member(&ctx, org, team, user).await?;
                    Ok(ok(json!({})))
                }
            }
            Endpoint::Robots(_) => {
                needs(manages, "managing robots needs manage-org")?;
                if method == Method::GET {
                    return Ok(ok(json!({ "robots": orgs::robots(sql, org).await? })));
                }
                let new: NewRobot = parse_json(&body)?;
                let robot = orgs::create_robot(&ctx, org, &new.name, new.expires_in_days).await?;
                Ok(created(json!(robot)))
            }
            Endpoint::Robot(_, robot) => {
                needs(manages, "managing robots needs manage-org")?;
                orgs::delete_robot(&ctx, org, robot).await?;
                Ok(ok(json!({})))
            }
            Endpoint::RobotSecret(_, robot) => {
                needs(manages, "managing robots needs manage-org")?;
                let rotation: Rotation = if body.is_empty() {
                    Rotation::default()
                } else {
                    parse_json(&body)?
                };
                let secret = orgs::rotate_robot(&ctx, org, robot, rotation.expires_in_days).await?;
                Ok(ok(json!(secret)))
            }
            Endpoint::Grants(_) if method == Method::GET => {
                Ok(ok(json!({ "grants": orgs::grants(sql, org).await? })))
            }
            Endpoint::Grants(_) => {
                let new: NewGrant = parse_json(&body)?;
                let grantee = Grantee::parse(org, &new.principal)?;
                let resource = Resource::parse(org, &new.resource).map_err(ApiError::BadRequest)?;
                let (granted, wanted) = match (&new.actions, &new.role) {
                    (Some(actions), None) => {
                        let set = permissions(actions)?;
                        if set.is_empty() {
                            return Err(ApiError::BadRequest("a grant needs actions".into()));
                        }
                        (Granted::Permissions(set), set)
                    }
                    (None, Some(role)) => {
                        let set =
                            orgs::role_permissions(sql, org, role)
                                .await?
                                .ok_or_else(|| {
                                    ApiError::BadRequest(format!("{org} has no role {role}"))
                                })?;
                        (Granted::Role(role.clone()), set)
                    }
                    _ => {
                        return Err(ApiError::BadRequest(
                            "a grant has either actions or a role".into(),
                        ))
                    }
                };
                if !self
                    .policy
                    .may_grant(principal, &resource, wanted, &standing.rules)
                {
                    return Err(ApiError::Forbidden(format!(
                        "you may not grant {} on {}: a grant is never wider than what its \
                         granter holds (with manage-repo)",
                        wanted.names().join(","),
                        resource.text()
                    )));
                }
                let grant = orgs::create_grant(&ctx, &grantee, &resource, &granted).await?;
                Ok(created(json!(grant)))
            }
            Endpoint::Grant(_, id) => {
                let grant = orgs::grant(sql, org, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("{org} has no grant {id}")))?;
                let resource = Resource::parse(org, &grant.resource).map_err(ApiError::Internal)?;
                let set =
                    Permissions::parse_names(grant.actions.iter().copied()).unwrap_or_default();
                needs(
                    manages
                        || self
                            .policy
                            .may_grant(principal, &resource, set, &standing.rules),
                    "removing a grant needs manage-org or holding what it grants",
                )?;
                orgs::delete_grant(&ctx, org, id).await?;
                Ok(ok(json!({})))
            }
            Endpoint::Roles(_) => Ok(ok(json!({ "roles": orgs::roles(sql, org).await? }))),
            Endpoint::Role(_, role) => {
                needs(manages, "managing roles needs manage-org")?;
                if method == Method::PUT {
                    let list: ActionList = parse_json(&body)?;
                    let set = permissions(&list.actions)?;
                    Ok(ok(json!(orgs::set_role(&ctx, org, role, set).await?)))
                } else {
                    orgs::delete_role(&ctx, org, role).await?;
                    Ok(ok(json!({})))
                }
            }
            Endpoint::Audit(_) => {
                needs(manages, "the audit log is for those with manage-org")?;
                let limit = match query.get("limit") {
                    None => 100,
                    Some(text) => text
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            ApiError::BadRequest("limit is a number from 1 to 1000".into())
                        })?,
                };
                Ok(ok(
                    json!({ "entries": orgs::audit_log(sql, org, limit).await? }),
                ))
            }
            Endpoint::Orgs => Err(ApiError::Internal("unreachable".into())),
        }
    }

    /// The caller's role and rules in `org`; an unknown organization is not found.
    async fn standing(&self, principal: &Principal, org: &str) -> Result<Standing, ApiError> {
        let sql = self.ports.sql.as_ref();
        let info = orgs::get(sql, org, &principal.name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no organization {org}")))?;
        let rules = orgs::rules_for(sql, principal, &[org]).await?;
        Ok(Standing {
            role: info.role,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_endpoints_need_every_part_of_their_path() {
        assert_eq!(endpoint("orgs"), Some(Endpoint::Orgs));
        assert_eq!(endpoint("orgs/acme"), Some(Endpoint::Org("acme")));
        assert_eq!(
            endpoint("orgs/acme/teams/devs/members/bob"),
            Some(Endpoint::TeamMember("acme", "devs", "bob"))
        );
        assert_eq!(
            endpoint("orgs/acme/robots/ci/secret"),
            Some(Endpoint::RobotSecret("acme", "ci"))
        );
        for bad in [
            "orgs/",
            "orgs//members",
            "orgs/acme/",
            "orgs/acme/unknown",
            "orgs/acme/teams/devs/members",
            "orgs/acme/robots/ci/secret/x",
            "orgsx",
            "orgs/acme/audit/x",
        ] {
            assert_eq!(endpoint(bad), None, "{bad:?}");
        }
    }
}
