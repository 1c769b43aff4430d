//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations. Routes are
//! registered through `utoipa_axum`'s router, which takes each route's path and methods from the
//! same annotation the document is built from, so a route cannot exist undocumented.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "GitStratum API", description = "Git hosting and CI/CD. Authenticate with `Authorization: Bearer <token>`; errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`."),
    modifiers(&BearerAuth),
    security(("token" = [])),
    tags(
        (name = "repos", description = "Repositories and their collaborators"),
        (name = "orgs", description = "Organizations, members and teams"),
        (name = "users", description = "Accounts, sessions, tokens and SSH keys"),
        (name = "webhooks", description = "Repository and organization webhooks, their deliveries"),
        (name = "audit", description = "The audit log"),
        (name = "pulls", description = "Pull requests: open, edit, close, merge"),
        (name = "ci", description = "Workflow runs, their jobs and steps"),
        (name = "runner", description = "The runner protocol (tokens of scope ci:runner)"),
        (name = "secrets", description = "CI secrets (sealed, never shown) and variables of repositories and organizations"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("gst_…").build()),
        );
    }
}

/// Declares every `{name}` of every path template as a required path parameter (at the path
/// level, so it applies to each of the path's operations). The templates come from the handlers'
/// annotations; the descriptions and types from this one table, so a parameter means the same
/// thing on every route.
fn declare_path_params(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};

    for (path, item) in doc.paths.paths.iter_mut() {
        let declared: Vec<String> = item.parameters.iter().flatten().map(|p| p.name.clone()).collect();
        let names = path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'));
        for name in names.filter(|n| !declared.iter().any(|d| d == n)) {
            let (integer, description) = param_meaning(name);
            let schema = ObjectBuilder::new().schema_type(if integer { Type::Integer } else { Type::String });
            let schema = if integer {
                schema.format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            } else {
                let (pattern, max_length) = name_rule(name).map_or((None, None), |(p, m)| (Some(p), m));
                schema.pattern(pattern).max_length(max_length)
            };
            let param = ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema))
                .build();
            item.parameters.get_or_insert_with(Vec::new).push(param);
        }
    }
}

/// The naming rule of a path parameter or body field that names something: the pattern the
/// server's validator enforces (from the validator's own module), and a maximum length where the
/// pattern does not say it.
fn name_rule(kind: &str) -> Option<(String, Option<usize>)> {
    use gitstratum_core::name;
    Some(match kind {
        "owner" | "org" | "team" | "username" => (name::username_pattern(), Some(name::MAX_USERNAME_LEN)),
        "repo" => (name::REPO_NAME_PATTERN.to_owned(), None),
        "name" => (gitstratum_platform::secrets::NAME_PATTERN.to_owned(), None),
        "slot" => (gitstratum_ci::artifacts::SLOT_PATTERN.to_owned(), None),
        _ => return None,
    })
}

/// Request body fields that name something, by schema and property, and the naming rule (of
/// [`name_rule`]) each follows.
const NAMED_FIELDS: &[(&str, &str, &str)] = &[
    ("CreateRepo", "name", "repo"),
    ("CreateRepo", "owner", "owner"),
    ("CreateFork", "name", "repo"),
    ("CreateFork", "organization", "org"),
    ("CreateOrg", "name", "org"),
    ("CreateUser", "username", "username"),
    ("CreateTeam", "name", "team"),
    ("FinishArtifact", "slot", "slot"),
    ("FinishCache", "slot", "slot"),
];

/// The served document: the generated one with every path parameter declared and the naming
/// rules and enumerations the server enforces written into the request schemas (values that live
/// in other crates, which the handlers' annotations cannot name).
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    declare_path_params(&mut doc);
    let mut doc = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    let schemas = &mut doc["components"]["schemas"];
    for (schema, property, kind) in NAMED_FIELDS {
        let field = &mut schemas[*schema]["properties"][*property];
        assert!(field.is_object(), "{schema}.{property} is not in the document");
        let (pattern, max_length) = name_rule(kind).expect("a known naming rule");
        field["pattern"] = pattern.into();
        if let Some(max) = max_length {
            field["maxLength"] = max.into();
        }
    }
    let scopes: Vec<&str> = gitstratum_platform::Scope::ALL.iter().map(|s| s.as_str()).collect();
    schemas["CreateToken"]["properties"]["scopes"]["items"] = serde_json::json!({"type": "string", "enum": scopes});
    schemas["CreateHook"]["properties"]["events"]["items"] =
        serde_json::json!({"type": "string", "enum": crate::hooks::EVENTS});
    schemas["Register"]["properties"]["labels"]["items"] =
        serde_json::json!({"type": "string", "pattern": crate::runner::LABEL_PATTERN});
    doc
}

/// What a path parameter not in the table is described as (the OpenAPI test refuses it).
pub const UNDESCRIBED: &str = "undescribed path parameter";

/// Whether a path parameter is an integer id, and what it names.
fn param_meaning(name: &str) -> (bool, &'static str) {
    match name {
        "owner" => (false, "The user or organization owning the repository (case-insensitive)"),
        "repo" => (false, "The repository's name (case-insensitive)"),
        "org" => (false, "The organization's name (case-insensitive)"),
        "team" => (false, "The team's name within the organization (case-insensitive)"),
        "username" => (false, "A user's name (case-insensitive)"),
        "id" => (true, "The numeric id of the item"),
        "delivery" => (true, "The numeric id of the delivery"),
        "job" => (true, "The numeric id of the job"),
        "number" => (true, "The step's number in its job, from 1"),
        "pull_number" => (true, "The pull request's number in its repository, from 1"),
        "branch" => (false, "A branch name, or a pattern of them (`release/*`); a `/` written as %2F"),
        "file" => (false, "A workflow file's name, such as ci.yml"),
        "sha" => (false, "A commit id (40 hex digits), or a branch or tag name"),
        "name" => (false, "A secret's or variable's name: letters, digits and _ (case-insensitive)"),
        "artifact" => (true, "The numeric id of the artifact"),
        "cache" => (true, "The numeric id of the cache"),
        "slot" => (false, "The runner's name for an upload of this job attempt: 1 to 64 letters, digits and dashes"),
        _ => (false, UNDESCRIBED),
    }
}
