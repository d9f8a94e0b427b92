//! `openregistry org …`, `team …`, `robot …` and `grant …`: Org mode at the command line, with
//! the operator's rights (the audit log names the actor `cli`). The same store functions as the
//! `/api/orgs` API, so both surfaces behave alike.

use clap::Subcommand;
use openregistry::auth::orgs::{self, Actor, Context, Granted, Grantee};
use openregistry::auth::permissions::{Permissions, Resource};
use openregistry::ports::{Clock, Sql};

use crate::embedded::{OsRandom, SystemClock};

#[derive(Subcommand)]
pub enum OrgAction {
    /// Create an organization (it owns the namespace `<org>/…`); `--owner` becomes its owner.
    Create {
        org: String,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Delete an organization; refused while it owns repositories unless `--force`.
    Delete {
        org: String,
        #[arg(long)]
        force: bool,
    },
    /// List every organization.
    List,
    /// Add a member, or change their role (reader, developer, maintainer, admin, owner, or a
    /// custom role).
    AddMember {
        org: String,
        user: String,
        #[arg(long)]
        role: String,
    },
    /// Remove a member (and their team memberships and grants).
    RemoveMember { org: String, user: String },
    /// Define (or change) a custom role: `--actions pull,push,delete-tag`.
    SetRole {
        org: String,
        role: String,
        #[arg(long, value_delimiter = ',')]
        actions: Vec<String>,
    },
    /// The newest entries of the audit log.
    Audit {
        org: String,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Subcommand)]
pub enum TeamAction {
    Create {
        org: String,
        team: String,
    },
    Delete {
        org: String,
        team: String,
    },
    /// Add an org member to a team.
    Add {
        org: String,
        team: String,
        user: String,
    },
    Remove {
        org: String,
        team: String,
        user: String,
    },
}

#[derive(Subcommand)]
pub enum RobotAction {
    /// Create `<org>+<name>`; its secret is printed once (alone on stdout).
    Create {
        org: String,
        name: String,
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Give a robot a new secret (the old one stops working); printed once.
    Rotate {
        org: String,
        name: String,
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    Delete {
        org: String,
        name: String,
    },
    List {
        org: String,
    },
}

#[derive(Subcommand)]
pub enum GrantAction {
    /// Grant a principal (`user:<name>`, `team:<name>`, `robot:<name>`, `anonymous`,
    /// `signed-in`) actions or a role on `<org>/<glob>[:<tag glob>]`; prints the grant's id.
    Add {
        org: String,
        #[arg(long)]
        principal: String,
        #[arg(long)]
        resource: String,
        #[arg(long, value_delimiter = ',', conflicts_with = "role")]
        actions: Vec<String>,
        #[arg(long)]
        role: Option<String>,
    },
    /// id, principal, resource and actions, tab-separated.
    List {
        org: String,
    },
    Remove {
        org: String,
        id: String,
    },
}

fn context(sql: &dyn Sql) -> Context<'_> {
    Context {
        sql,
        random: &OsRandom,
        now_ms: SystemClock.now_unix_millis(),
        actor: Actor::cli(),
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn permissions(names: &[String]) -> Result<Permissions, String> {
    Permissions::parse_names(names.iter().map(String::as_str))
        .map_err(|bad| format!("{bad:?} is not an action (pull, push, overwrite-tag, delete-tag, delete-manifest, manage-repo, manage-org)"))
}

pub async fn org(action: OrgAction, sql: &dyn Sql) -> Result<(), String> {
    let ctx = context(sql);
    match action {
        OrgAction::Create { org, owner } => {
            orgs::create(&ctx, &org, owner.as_deref())
                .await
                .map_err(text)?;
            println!("created organization {org}");
        }
        OrgAction::Delete { org, force } => {
            let n = orgs::delete(&ctx, &org, force).await.map_err(text)?;
            println!("deleted organization {org} ({n} repositories)");
        }
        OrgAction::List => {
            for org in orgs::list(sql, None).await.map_err(text)? {
                println!("{}", org.name);
            }
        }
        OrgAction::AddMember { org, user, role } => {
            orgs::set_member(&ctx, &org, &user, &role)
                .await
                .map_err(text)?;
            println!("{user} is {role} of {org}");
        }
        OrgAction::RemoveMember { org, user } => {
            orgs::remove_member(&ctx, &org, &user).await.map_err(text)?;
            println!("removed {user} from {org}");
        }
        OrgAction::SetRole { org, role, actions } => {
            let set = permissions(&actions)?;
            orgs::set_role(&ctx, &org, &role, set).await.map_err(text)?;
            println!("role {role} of {org}: {}", set.names().join(","));
        }
        OrgAction::Audit { org, limit } => {
            for e in orgs::audit_log(sql, &org, limit).await.map_err(text)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.at_ms, e.actor, e.action, e.target, e.detail, e.source
                );
            }
        }
    }
    Ok(())
}

pub async fn team(action: TeamAction, sql: &dyn Sql) -> Result<(), String> {
    let ctx = context(sql);
    match action {
        TeamAction::Create { org, team } => {
            orgs::create_team(&ctx, &org, &team).await.map_err(text)?;
            println!("created team {team} in {org}");
        }
        TeamAction::Delete { org, team } => {
            orgs::delete_team(&ctx, &org, &team).await.map_err(text)?;
            println!("deleted team {team} of {org}");
        }
        TeamAction::Add { org, team, user } => {
            orgs::add_team_member(&ctx, &org, &team, &user)
                .await
                .map_err(text)?;
            println!("{user} is in {org}'s team {team}");
        }
        TeamAction::Remove { org, team, user } => {
            orgs::remove_team_member(&ctx, &org, &team, &user)
                .await
                .map_err(text)?;
            println!("removed {user} from {org}'s team {team}");
        }
    }
    Ok(())
}

pub async fn robot(action: RobotAction, sql: &dyn Sql) -> Result<(), String> {
    let ctx = context(sql);
    match action {
        RobotAction::Create {
            org,
            name,
            expires_in_days,
        } => {
            let robot = orgs::create_robot(&ctx, &org, &name, expires_in_days)
                .await
                .map_err(text)?;
            eprintln!("created robot {}; its secret is shown once:", robot.name);
            println!("{}", robot.secret);
        }
        RobotAction::Rotate {
            org,
            name,
            expires_in_days,
        } => {
            let robot = orgs::rotate_robot(&ctx, &org, &name, expires_in_days)
                .await
                .map_err(text)?;
            eprintln!("new secret for {}; it is shown once:", robot.name);
            println!("{}", robot.secret);
        }
        RobotAction::Delete { org, name } => {
            orgs::delete_robot(&ctx, &org, &name).await.map_err(text)?;
            println!(
                "deleted robot {org}+{}",
                orgs::robot_short_name(&org, &name)
            );
        }
        RobotAction::List { org } => {
            for r in orgs::robots(sql, &org).await.map_err(text)? {
                let expires = r
                    .expires_at_ms
                    .map_or_else(|| "never".to_owned(), |t| t.to_string());
                println!("{}\t{}\texpires {expires}", r.name, r.created_at_ms);
            }
        }
    }
    Ok(())
}

pub async fn grant(action: GrantAction, sql: &dyn Sql) -> Result<(), String> {
    let ctx = context(sql);
    match action {
        GrantAction::Add {
            org,
            principal,
            resource,
            actions,
            role,
        } => {
            let grantee = Grantee::parse(&org, &principal).map_err(text)?;
            let resource = Resource::parse(&org, &resource)?;
            let granted = match role {
                Some(role) => Granted::Role(role),
                None if actions.is_empty() => {
                    return Err("a grant needs --actions or --role".into())
                }
                None => Granted::Permissions(permissions(&actions)?),
            };
            let grant = orgs::create_grant(&ctx, &grantee, &resource, &granted)
                .await
                .map_err(text)?;
            eprintln!(
                "granted {} on {}: {}",
                grant.principal,
                grant.resource,
                grant.actions.join(",")
            );
            println!("{}", grant.id);
        }
        GrantAction::List { org } => {
            for g in orgs::grants(sql, &org).await.map_err(text)? {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.id,
                    g.principal,
                    g.resource,
                    g.actions.join(",")
                );
            }
        }
        GrantAction::Remove { org, id } => {
            orgs::delete_grant(&ctx, &org, &id).await.map_err(text)?;
            println!("removed grant {id}");
        }
    }
    Ok(())
}
