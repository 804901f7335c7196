//! The OpenAPI document, generated from the handlers and their types.
//!
//! Each resource module registers its handlers with `routes!(...)` on a
//! `utoipa_axum` [`OpenApiRouter`](utoipa_axum::router::OpenApiRouter), so a
//! route cannot be served without being documented. Each handler's
//! `#[utoipa::path]` names its success body (an [`Envelope`] or
//! [`PageEnvelope`](sqlarena_common::PageEnvelope) of a `ToSchema` type) and
//! the errors particular to it ([`Forbidden`], [`NotFound`], [`Conflict`],
//! [`RateLimited`]); the errors any operation of a kind can answer are added
//! here, in one place, by [`finish`]: 401 where a token is needed,
//! 400/413/422 where there is a body or a query string, 404 where there are
//! path parameters, 500 and 503 everywhere.
//!
//! Validation rules (lengths, ranges, enums, patterns) are written on the
//! request types as `#[schema(...)]`/`#[param(...)]` beside the constants
//! the handlers check them with; `tests` below holds the two to each other.

use std::collections::BTreeMap;

use sqlarena_common::ErrorEnvelope;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[allow(unused_imports)] // for the intra-doc link above
use sqlarena_common::Envelope;

/// Security scheme of a signed-in person: `Authorization: Bearer` with the
/// token from `POST /api/v1/login`.
pub const SESSION: &str = "session";
/// Security scheme of a grader: the token its registration returned.
pub const GRADER: &str = "grader";
/// Security scheme of a grader's registration: a cluster token.
pub const CLUSTER: &str = "cluster";
/// Security scheme of `/metrics` when `--metrics-token` is set.
pub const METRICS: &str = "metrics";

/// The parts of the document no handler carries: title, tags, security
/// schemes and the error envelope.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sqlarena coordinator",
        description = "People API (`/api/v1`), grader protocol (`/api/v1/grader`) and \
            operations endpoints of the sqlarena coordinator. Every JSON reply is an \
            envelope: `{\"status\":\"success\",\"data\":...}` (lists add `next_cursor`) or \
            `{\"status\":\"error\",\"code\":\"...\",\"message\":\"...\"}`, where `code` is \
            stable and `message` is for people. 429 and some 503 replies carry `Retry-After` \
            and `retry_after`.",
        license(name = "MIT")
    ),
    tags(
        (name = "users", description = "Registration, sessions, passwords, invites"),
        (name = "challenges", description = "Challenges and their leaderboards"),
        (name = "attempts", description = "Submitting and following attempts"),
        (name = "assessments", description = "Timed assessments, their sessions and scores"),
        (name = "runs", description = "Grading runs: a roster graded at once, gradebook, webhook"),
        (name = "exports", description = "Gradebooks, attempts and run results written to files, downloadable with Range"),
        (name = "long-jobs", description = "Long jobs (runs, exports, challenge inits) as operations: progress, pause, resume, cancel"),
        (name = "admin", description = "Cluster tokens, graders, jobs, queues (ADMIN only)"),
        (name = "grader", description = "The grader protocol"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                SESSION,
                "A person's session token (`sqa_...`) from `POST /api/v1/login`.",
            ),
            (
                GRADER,
                "A grader's token (`sqg_...`) from `POST /api/v1/grader/register`.",
            ),
            (
                CLUSTER,
                "A cluster token (`sqc_...`) from an admin, to register a grader.",
            ),
            (
                METRICS,
                "The `--metrics-token`, when the coordinator was started with one.",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

/// Completes the document once every route is in: adds the errors every
/// operation of a kind can answer (see the module documentation), leaving
/// those a handler documents itself.
pub fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    // A password comes as `password` or the seed's `unsafe_password`:
    // exactly one, which field attributes cannot say.
    for request in ["RegisterRequest", "LoginRequest", "PasswordRequest"] {
        require_exactly_one(openapi, request, &["password", "unsafe_password"]);
    }
    {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_error_responses(operation);
            }
        }
    }
}

/// Makes the component schema `name` require exactly one of `fields`.
fn require_exactly_one(openapi: &mut utoipa::openapi::OpenApi, name: &str, fields: &[&str]) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(schema)) = components.schemas.remove(name) else {
        panic!("no component schema {name} to require one of {fields:?} in");
    };
    // Present and not null: a null field counts as absent.
    let one_of = fields.iter().fold(OneOfBuilder::new(), |one_of, field| {
        one_of.item(
            ObjectBuilder::new()
                .property(*field, ObjectBuilder::new().schema_type(Type::String))
                .required(*field),
        )
    });
    let schema = AllOfBuilder::new().item(schema).item(one_of).build();
    components
        .schemas
        .insert(name.to_string(), RefOr::T(Schema::AllOf(schema)));
}

fn add_error_responses(operation: &mut Operation) {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_path = parameters
        .iter()
        .any(|parameter| parameter.parameter_in == ParameterIn::Path);
    let has_query = parameters
        .iter()
        .any(|parameter| parameter.parameter_in == ParameterIn::Query);
    let has_body = operation.request_body.is_some();
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|security| !security.is_empty());
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    };
    if has_body || has_query {
        add(
            "400",
            "`bad_request`: the body is not JSON, or a query parameter has the wrong type or value",
        );
    }
    if has_body {
        add(
            "413",
            "`payload_too_large`: the body is over `--max-body-bytes`",
        );
        add(
            "422",
            "`validation_failed`: a field breaks a documented rule",
        );
    }
    if secured {
        add(
            "401",
            "`unauthorized`: no token, or an unknown, expired or revoked one",
        );
    }
    if has_path {
        add("404", "`not_found`: no such resource");
    }
    add(
        "500",
        "`internal`: a fault of the server, logged with its detail",
    );
    add(
        "503",
        "`unavailable`: the store is unreachable, the server is busy (with `Retry-After`), \
         or the request took longer than `--request-timeout-ms`",
    );
}

/// One error response: the error envelope.
pub fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                    .build(),
            )
            .build(),
    )
}

/// Declares a type usable in `responses(...)` for one documented error.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $status:literal, $description:literal;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([($status.to_string(), error_response($description))])
                }
            }
        )+
    };
}

error_responses! {
    /// 403 `forbidden`.
    Forbidden => "403", "`forbidden`: signed in, but this role or person may not do this";
    /// 404 `not_found`.
    NotFound => "404", "`not_found`: no such resource";
    /// 409 `conflict`.
    Conflict => "409", "`conflict`: the resource's state does not allow this";
    /// 429 `rate_limited`, with `Retry-After`.
    RateLimited => "429", "`rate_limited`: too many requests; retry after `Retry-After` seconds";
    /// 410 `gone`.
    Gone => "410", "`gone`: it existed but was deleted (an expired export's file)";
    /// 416 `range_not_satisfiable`, with `Content-Range: bytes */LENGTH`.
    RangeNotSatisfiable => "416", "`range_not_satisfiable`: the `Range` is malformed, several ranges, or outside the file";
}
