//! ECS/STS API errors as the real gateway reports them: an HTTP status plus the
//! `{"RequestId","HostId","Code","Message","Recommend"}` body. Codes, statuses and messages are
//! the documented ones (`seeds/` and `notes/ecs-api.md` §2), so clients can be tested against
//! exactly what production would send.

use axum::http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    // --- request / gateway level -------------------------------------------------------------

    pub fn missing_parameter(name: &str) -> Self {
        Self::bad_request(
            "MissingParameter",
            format!(
                "An input parameter \"{name}\" that is mandatory for processing the request is not supplied."
            ),
        )
    }

    pub fn invalid_parameter(name: &str) -> Self {
        Self::bad_request(
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid."),
        )
    }

    pub fn invalid_action() -> Self {
        Self::not_found(
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    pub fn invalid_version() -> Self {
        Self::bad_request(
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        )
    }

    pub fn incomplete_signature() -> Self {
        Self::bad_request(
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards.",
        )
    }

    pub fn signature_mismatch(detail: &str) -> Self {
        Self::bad_request(
            "SignatureDoesNotMatch",
            format!("Specified signature is not matched with our calculation. {detail}"),
        )
    }

    pub fn access_key_not_found() -> Self {
        Self::not_found(
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    }

    pub fn illegal_timestamp(name: &str) -> Self {
        Self::bad_request(
            "IllegalTimestamp",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    pub fn nonce_used() -> Self {
        Self::bad_request(
            "SignatureNonceUsed",
            "The request signature nonce has been used.",
        )
    }

    pub fn missing_security_token() -> Self {
        Self::bad_request(
            "MissingSecurityToken",
            "SecurityToken is mandatory for this action.",
        )
    }

    pub fn security_token_expired() -> Self {
        Self::bad_request(
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        )
    }

    pub fn security_token_mismatch() -> Self {
        Self::bad_request(
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    }

    pub fn security_token_malformed() -> Self {
        Self::bad_request(
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed.",
        )
    }

    pub fn throttled() -> Self {
        Self::bad_request(
            "Throttling.User",
            "Request was denied due to user flow control.",
        )
    }

    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    pub fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The request processing has failed due to some unknown error, exception or failure.",
        )
    }

    pub fn idempotent_mismatch() -> Self {
        Self::bad_request(
            "IdempotentParameterMismatch",
            "The request is retried with updated parameters.",
        )
    }

    pub fn invalid_client_token() -> Self {
        Self::bad_request(
            "InvalidClientToken.ValueNotSupported",
            "The ClientToken provided is invalid.",
        )
    }

    pub fn dry_run_passed() -> Self {
        Self::bad_request(
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        )
    }

    // --- regions -------------------------------------------------------------------------------

    /// CancelTask documents this one as 400, every other operation as 404.
    pub fn region_not_found(status: StatusCode) -> Self {
        Self::new(
            status,
            "InvalidRegionId.NotFound",
            "The specified RegionId does not exist.",
        )
    }

    pub fn source_region_not_found() -> Self {
        Self::bad_request("SourceRegion.NotFound", "The source region not found")
    }

    pub fn destination_region_not_found() -> Self {
        Self::bad_request(
            "DestinationRegion.NotFound",
            "The destination region not found",
        )
    }

    pub fn incorrect_destination_region() -> Self {
        Self::forbidden(
            "IncorrectDestinationRegion",
            "The destination region is not equal the target region.",
        )
    }

    pub fn invalid_accept_language() -> Self {
        Self::not_found(
            "InvalidAcceptLanguage.NotFound",
            "The specified AcceptLanguage is not found.",
        )
    }

    // --- images --------------------------------------------------------------------------------

    pub fn image_not_found() -> Self {
        Self::not_found(
            "InvalidImageId.NotFound",
            "The specified ImageId does not exist.",
        )
    }

    pub fn image_not_available() -> Self {
        Self::bad_request("IncorrectImageStatus", "The image not available.")
    }

    pub fn copy_finished() -> Self {
        Self::bad_request("IncorrectImageStatus", "The image is copied finished.")
    }

    pub fn not_from_copy() -> Self {
        Self::bad_request(
            "ImageCreatedNotFromCopy",
            "The specified image is not the target image of a copy action.",
        )
    }

    pub fn cancel_not_supported() -> Self {
        Self::bad_request(
            "CancelNotSupported",
            "The specified image coping can not be cancelled.",
        )
    }

    pub fn image_copying() -> Self {
        Self::forbidden("OperationDenied.ImageCopying", "The Image are coping.")
    }

    pub fn image_importing() -> Self {
        Self::forbidden(
            "ImageIsImporting",
            "The specified image is importing. Please cancel task first.",
        )
    }

    pub fn image_exporting() -> Self {
        Self::forbidden("ImageIsExporting", "Please cancel task first.")
    }

    /// `destination` selects CopyImage's wording ("destination Image name") over ImportImage's.
    pub fn image_name_malformed(destination: bool) -> Self {
        let which = if destination {
            "destination Image"
        } else {
            "Image"
        };
        Self::bad_request(
            "InvalidImageName.Malformed",
            format!("The specified {which} name is wrongly formed."),
        )
    }

    pub fn image_name_duplicated() -> Self {
        Self::bad_request(
            "InvalidImageName.Duplicated",
            "The destination image is exist.",
        )
    }

    pub fn description_malformed(destination: bool) -> Self {
        let which = if destination {
            "destination description"
        } else {
            "description"
        };
        Self::bad_request(
            "InvalidDescription.Malformed",
            format!("The specified {which} is wrongly formed."),
        )
    }

    pub fn encrypted_illegal() -> Self {
        Self::bad_request(
            "InvalidParameter.EncryptedIllegal",
            "The specified parameter Encrypted must be true when kmsKeyId is not empty.",
        )
    }

    pub fn invalid_owner_alias() -> Self {
        Self::bad_request(
            "InvalidImageOwnerAlias.ValueNotSupported",
            "The specified ImageOwnerAlias is not supported.",
        )
    }

    // --- tags ----------------------------------------------------------------------------------

    pub fn too_many_tags() -> Self {
        Self::bad_request(
            "NumberExceed.Tags",
            "The maximum number of Tags is exceeded.",
        )
    }

    pub fn too_many_resources() -> Self {
        Self::bad_request(
            "NumberExceed.ResourceIds",
            "The maximum number of ResourceIds is exceeded.",
        )
    }

    pub fn duplicate_tag_key() -> Self {
        Self::bad_request("Duplicate.TagKey", "The Tag.N.Key contain duplicate key.")
    }

    pub fn tag_key_malformed() -> Self {
        Self::bad_request(
            "InvalidTagKey.Malformed",
            "The specified Tag.n.Key is invalid.",
        )
    }

    pub fn tag_value_malformed() -> Self {
        Self::bad_request(
            "InvalidTagValue.Malformed",
            "The specified Tag.n.Value is invalid.",
        )
    }

    pub fn tag_quota_exceeded() -> Self {
        Self::bad_request(
            "OperationDenied.QuotaExceed",
            "The quota of tags on resource is beyond permitted range.",
        )
    }

    pub fn resource_not_found() -> Self {
        Self::not_found(
            "InvalidResourceId.NotFound",
            "The specified ResourceIds are not found in our records.",
        )
    }

    pub fn resource_type_not_found() -> Self {
        Self::not_found(
            "InvalidResourceType.NotFound",
            "The ResourceType provided does not exist in our records.",
        )
    }

    // --- tasks ---------------------------------------------------------------------------------

    pub fn task_not_found() -> Self {
        Self::bad_request(
            "InvalidTaskId.NotFound",
            "The specified \"TaskId\" is not found.",
        )
    }

    pub fn task_status_incorrect() -> Self {
        Self::forbidden(
            "InvalidTaskId.IncorrectTaskStatus",
            "The specified task status is not invalid.",
        )
    }

    pub fn cancel_task_failed() -> Self {
        Self::forbidden(
            "CancelTaskFailed",
            "The task is failed to cancel, Please contact the administrator.",
        )
    }

    // --- STS -----------------------------------------------------------------------------------

    pub fn oidc_token_invalid(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.OIDCToken.Invalid",
            message,
        )
    }

    pub fn invalid_duration_seconds() -> Self {
        Self::bad_request(
            "InvalidParameter.DurationSeconds",
            "The Min/Max value of DurationSeconds is 15min/12hr.",
        )
    }

    pub fn invalid_role_session_name() -> Self {
        Self::bad_request(
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        )
    }

    /// The JSON body every error response carries.
    pub fn body(&self, request_id: &str, host_id: &str) -> serde_json::Value {
        let product = if host_id.starts_with("sts") {
            "Sts"
        } else {
            "Ecs"
        };
        serde_json::json!({
            "RequestId": request_id,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!(
                "https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}",
                self.code
            ),
        })
    }
}
