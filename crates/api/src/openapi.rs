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
        (name = "webhooks", description = "Repository webhooks and deliveries"),
        (name = "audit", description = "The audit log"),
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
