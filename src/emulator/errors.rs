//! ECS/STS API errors as the real gateway reports them: an HTTP status plus the
//! `{"RequestId","HostId","Code","Message","Recommend"}` body. Codes, statuses and messages are
//! the documented ones (the ECS API reference of each operation; the table is in
//! `docs/emulator.md`), so clients can be tested against
//! exactly what production would send.

use axum::http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

/// One documented answer: the operation whose error table lists it (`None` for codes every
/// operation can answer), HTTP status, code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Documented {
    pub action: Option<&'static str>,
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

const fn doc(
    action: Option<&'static str>,
    status: u16,
    code: &'static str,
    message: &'static str,
) -> Documented {
    Documented {
        action,
        status,
        code,
        message,
    }
}

const COPY: Option<&str> = Some("CopyImage");
const CANCEL_COPY: Option<&str> = Some("CancelCopyImage");
const CANCEL_TASK: Option<&str> = Some("CancelTask");
const DELETE: Option<&str> = Some("DeleteImage");
const EXPORT: Option<&str> = Some("ExportImage");
const ANY: Option<&str> = None;

/// The error table fault injection answers from (`docs/emulator.md`): every row of the
/// documented error tables of CopyImage, CancelCopyImage and CancelTask, the refusals of
/// DeleteImage and ExportImage, and the gateway codes any operation can meet. Spellings are the
/// documented ones,
/// typos included (`Forbbiden`, `OperationDeined.EncryptedSnapshot`). Where a table lists one
/// code with several messages, the first row is the one answered unless a status picks another.
#[rustfmt::skip]
pub const DOCUMENTED: &[Documented] = &[
    // CopyImage
    doc(COPY, 401, "InvalidAliUid.IsNull", "The aliUid must not be null"),
    doc(COPY, 400, "InvalidImageName.Malformed", "The specified destination Image name is wrongly formed."),
    doc(COPY, 403, "Forbbiden", "User not authorized to operate on the specified resource."),
    doc(COPY, 400, "InvalidDescription.Malformed", "The specified destination description is wrongly formed."),
    doc(COPY, 400, "SourceRegion.NotFound", "The source region not found"),
    doc(COPY, 400, "DestinationRegion.NotFound", "The destination region not found"),
    doc(COPY, 404, "InvalidImageId.NotFound", "The specified ImageId does not exist."),
    doc(COPY, 400, "IncorrectImageStatus", "The image not available."),
    doc(COPY, 400, "InvalidSnapshotId.NotFound", "The specified SnapshotId does not exist."),
    doc(COPY, 400, "InvalidImageName.Duplicated", "The destination image is exist."),
    doc(COPY, 403, "QuotaExceed.Image", "The Image Quota exceeds."),
    doc(COPY, 403, "QuotaExceed.Snapshot", "The snapshot quota exceeds."),
    doc(COPY, 403, "OperationDenied.ImageCopying", "The Image are coping."),
    doc(COPY, 403, "OperationDenied.ImageCopyConflict", "The same image cannot be copied concurrently."),
    doc(COPY, 403, "RegionNotSupportCopy", "The region not support copy."),
    doc(COPY, 403, "InvalidSnapshot.TooOld", "This operation is denied because the specified snapshot is created before 2013-07-15."),
    doc(COPY, 403, "OperationDenied", "The specified snapshot is not allowed to create image."),
    doc(COPY, 403, "IncorrectDestinationRegion", "The destination region is not equal the target region."),
    doc(COPY, 403, "SizeExceed.Image", "The image exceeds the maximum size. Please open a ticket to add the account to the white list."),
    doc(COPY, 403, "OperationDeined.EncryptedSnapshot", "The image contains encrypted snapshots, which do not support copying."),
    doc(COPY, 500, "InternalError", "The request processing has failed due to some unknown error, exception or failure."),
    doc(COPY, 403, "InternalError", "The request processing has failed due to some unknown error."),
    doc(COPY, 403, "OperationDenied.SameRegionOnly", "The image shared from others can not be copied to another region directly."),
    doc(COPY, 403, "OperationDenied.NotPublished", "The operation is denied because corresponding marketplace image is not published in destination region."),
    doc(COPY, 403, "InvalidParameter.KMSKeyId.CMKNotEnabled", "The CMK needs to be enabled."),
    doc(COPY, 404, "InvalidParameter.KMSKeyId.NotFound", "The specified KMSKeyId does not exist."),
    doc(COPY, 403, "InvalidParameter.KMSKeyId.KMSUnauthorized", "ECS service have no right to access your KMS."),
    doc(COPY, 403, "InvalidRegion.NotSupport", "The specified region does not support byok."),
    doc(COPY, 403, "UserNotInTheWhiteList", "The user is not in byok white list."),
    doc(COPY, 400, "InvalidParameter.EncryptedIllegal", "The specified parameter Encrypted must be true when kmsKeyId is not empty."),
    // CancelCopyImage
    doc(CANCEL_COPY, 404, "InvalidRegionId.NotFound", "The specified RegionId does not exist."),
    doc(CANCEL_COPY, 404, "InvalidImageId.NotFound", "The specified ImageId does not exist."),
    doc(CANCEL_COPY, 400, "IncorrectImageStatus", "The image is copied finished."),
    doc(CANCEL_COPY, 400, "InvalidDescription.Malformed", "The specified description is wrongly formed."),
    doc(CANCEL_COPY, 400, "ImageCreatedNotFromCopy", "The specified image is not the target image of a copy action."),
    doc(CANCEL_COPY, 400, "CancelNotSupported", "The specified image coping can not be cancelled."),
    doc(CANCEL_COPY, 500, "InternalError", "The request processing has failed due to some unknown error."),
    // CancelTask
    doc(CANCEL_TASK, 400, "MissingParameter", "An input parameter \"TaskId\" that is mandatory for processing the request is not supplied."),
    doc(CANCEL_TASK, 400, "InvalidRegionId.NotFound", "The specified RegionId does not exist."),
    doc(CANCEL_TASK, 400, "InvalidTaskId.NotFound", "The specified \"TaskId\" is not found."),
    doc(CANCEL_TASK, 403, "InvalidTaskId.TaskActionNotSupport", "The specified task action not support."),
    doc(CANCEL_TASK, 403, "InvalidTaskId.IncorrectTaskStatus", "The specified task status is not invalid."),
    doc(CANCEL_TASK, 403, "CancelTaskFailed", "The task is failed to cancel, Please contact the administrator."),
    // DeleteImage
    doc(DELETE, 403, "ImageUsingByInstance", "The specified image has been used to create instances."),
    doc(DELETE, 403, "ImageUseShared", "The specified image has been shared to others."),
    doc(DELETE, 403, "Forbidden", "User not authorized to operate on the specified resource."),
    doc(DELETE, 403, "OperationDenied.ImageCopying", "The Image are coping."),
    doc(DELETE, 403, "ImageIsImporting", "The specified image is importing. Please cancel task first."),
    doc(DELETE, 403, "ImageIsExporting", "Please cancel task first."),
    doc(DELETE, 403, "InvalidOperation.Conflict", "Request was denied due to conflict with a previous request, please try again later."),
    doc(DELETE, 404, "InvalidRegionId.NotFound", "The specified RegionId does not exist."),
    // ExportImage: the refusals the emulator raises itself (the quota codes are not played)
    doc(EXPORT, 403, "ImageIsExporting", "Please cancel task first."),
    doc(EXPORT, 400, "IncorrectImageStatus", "The image not available."),
    // Any operation
    doc(ANY, 400, "Throttling", "Request was denied due to flow control."),
    doc(ANY, 400, "Throttling.User", "Request was denied due to user flow control."),
    doc(ANY, 400, "Throttling.Api", "Request was denied due to api flow control."),
    doc(ANY, 400, "UnknownError", "The request processing has failed due to some unknown error."),
    doc(ANY, 400, "InvalidParameter", "The specified parameter is not valid."),
    doc(ANY, 400, "MissingParameter", "An input parameter that is mandatory for processing the request is not supplied."),
    doc(ANY, 404, "InvalidRegionId.NotFound", "The specified RegionId does not exist."),
    doc(ANY, 404, "InvalidImageId.NotFound", "The specified ImageId does not exist."),
    doc(ANY, 409, "OperationConflict", "Request was denied due to conflict with a previous request."),
    doc(ANY, 500, "InternalError", "The request processing has failed due to some unknown error, exception or failure."),
    doc(ANY, 503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
];

/// Whether some operation documents `code`.
pub fn is_documented(code: &str) -> bool {
    DOCUMENTED.iter().any(|d| d.code == code)
}

/// The statuses documented for `code` as `action` answers it.
pub fn documented_statuses(action: &str, code: &str) -> Vec<u16> {
    let mut statuses: Vec<u16> = candidates(action, code).map(|d| d.status).collect();
    statuses.dedup();
    statuses
}

/// The rows `action` answers `code` from: its own table's rows when it lists the code, else the
/// rows for every operation, else any operation's rows (an operation's table is never complete).
fn candidates<'a>(
    action: &'a str,
    code: &'a str,
) -> impl Iterator<Item = &'static Documented> + 'a {
    let with_code = move || DOCUMENTED.iter().filter(move |d| d.code == code);
    let scope = if with_code().any(|d| d.action == Some(action)) {
        Some(Some(action))
    } else if with_code().any(|d| d.action.is_none()) {
        Some(None)
    } else {
        None
    };
    with_code().filter(move |d| scope.is_none_or(|s| d.action == s))
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The documented answer for `code` from `action`, with `status` when given (it must be one
    /// of the documented ones).
    pub fn documented(action: &str, code: &str, status: Option<u16>) -> Option<Self> {
        candidates(action, code)
            .find(|d| status.is_none_or(|s| s == d.status))
            .and_then(|d| {
                let status = StatusCode::from_u16(d.status).ok()?;
                Some(Self::new(status, d.code, d.message))
            })
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

    pub fn task_action_not_supported() -> Self {
        Self::forbidden(
            "InvalidTaskId.TaskActionNotSupport",
            "The specified task action not support.",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the documented error tables of CopyImage, CancelCopyImage and CancelTask
    /// (code and HTTP status), and DeleteImage's refusals.
    const SEED_ROWS: &[(&str, u16, &str)] = &[
        ("CopyImage", 401, "InvalidAliUid.IsNull"),
        ("CopyImage", 400, "InvalidImageName.Malformed"),
        ("CopyImage", 403, "Forbbiden"),
        ("CopyImage", 400, "InvalidDescription.Malformed"),
        ("CopyImage", 400, "SourceRegion.NotFound"),
        ("CopyImage", 400, "DestinationRegion.NotFound"),
        ("CopyImage", 404, "InvalidImageId.NotFound"),
        ("CopyImage", 400, "IncorrectImageStatus"),
        ("CopyImage", 400, "InvalidSnapshotId.NotFound"),
        ("CopyImage", 400, "InvalidImageName.Duplicated"),
        ("CopyImage", 403, "QuotaExceed.Image"),
        ("CopyImage", 403, "QuotaExceed.Snapshot"),
        ("CopyImage", 403, "OperationDenied.ImageCopying"),
        ("CopyImage", 403, "RegionNotSupportCopy"),
        ("CopyImage", 403, "InvalidSnapshot.TooOld"),
        ("CopyImage", 403, "OperationDenied"),
        ("CopyImage", 403, "IncorrectDestinationRegion"),
        ("CopyImage", 403, "SizeExceed.Image"),
        ("CopyImage", 403, "OperationDeined.EncryptedSnapshot"),
        ("CopyImage", 500, "InternalError"),
        ("CopyImage", 403, "OperationDenied.SameRegionOnly"),
        ("CopyImage", 403, "OperationDenied.NotPublished"),
        ("CopyImage", 403, "InvalidParameter.KMSKeyId.CMKNotEnabled"),
        ("CopyImage", 404, "InvalidParameter.KMSKeyId.NotFound"),
        (
            "CopyImage",
            403,
            "InvalidParameter.KMSKeyId.KMSUnauthorized",
        ),
        ("CopyImage", 403, "InvalidRegion.NotSupport"),
        ("CopyImage", 403, "UserNotInTheWhiteList"),
        ("CopyImage", 400, "InvalidParameter.EncryptedIllegal"),
        ("CancelCopyImage", 404, "InvalidRegionId.NotFound"),
        ("CancelCopyImage", 404, "InvalidImageId.NotFound"),
        ("CancelCopyImage", 400, "IncorrectImageStatus"),
        ("CancelCopyImage", 400, "InvalidDescription.Malformed"),
        ("CancelCopyImage", 400, "ImageCreatedNotFromCopy"),
        ("CancelCopyImage", 400, "CancelNotSupported"),
        ("CancelCopyImage", 500, "InternalError"),
        ("CancelTask", 400, "MissingParameter"),
        ("CancelTask", 400, "InvalidRegionId.NotFound"),
        ("CancelTask", 400, "InvalidTaskId.NotFound"),
        ("CancelTask", 403, "InvalidTaskId.TaskActionNotSupport"),
        ("CancelTask", 403, "InvalidTaskId.IncorrectTaskStatus"),
        ("CancelTask", 403, "CancelTaskFailed"),
        ("DeleteImage", 403, "ImageUsingByInstance"),
        ("DeleteImage", 403, "ImageUseShared"),
        ("DeleteImage", 403, "Forbidden"),
        ("DeleteImage", 403, "OperationDenied.ImageCopyConflict"),
        ("DeleteImage", 403, "InvalidOperation.Conflict"),
    ];

    #[test]
    fn every_documented_row_answers_with_its_status() {
        for &(action, status, code) in SEED_ROWS {
            let error = ApiError::documented(action, code, None)
                .unwrap_or_else(|| panic!("{action} {code} is not in the table"));
            assert_eq!(
                (error.status.as_u16(), error.code.as_str()),
                (status, code),
                "{action}"
            );
            assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn a_status_picks_among_rows_and_unknown_ones_are_refused() {
        let rare = ApiError::documented("CopyImage", "InternalError", Some(403)).unwrap();
        assert_eq!(rare.status, StatusCode::FORBIDDEN);
        assert_eq!(
            documented_statuses("CopyImage", "InternalError"),
            vec![500, 403]
        );
        assert_eq!(
            ApiError::documented("CopyImage", "QuotaExceed.Image", Some(500)),
            None
        );
        assert_eq!(
            ApiError::documented("DeleteImage", "NoSuchCode", None),
            None
        );
        assert!(!is_documented("ImageUsingByInstanse"));
    }

    #[test]
    fn operations_answer_from_their_own_table_first() {
        // CancelTask documents a missing region as 400, every other operation as 404.
        let status = |action| {
            ApiError::documented(action, "InvalidRegionId.NotFound", None)
                .unwrap()
                .status
                .as_u16()
        };
        assert_eq!(status("CancelTask"), 400);
        assert_eq!(status("DescribeImages"), 404);
        // A code only another operation documents is still answered, as that one documents it.
        let borrowed = ApiError::documented("TagResources", "QuotaExceed.Image", None).unwrap();
        assert_eq!(borrowed.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_table_agrees_with_the_errors_the_emulator_raises_itself() {
        for (action, own) in [
            ("CancelCopyImage", ApiError::cancel_not_supported()),
            ("CancelCopyImage", ApiError::not_from_copy()),
            ("CancelCopyImage", ApiError::copy_finished()),
            ("CancelTask", ApiError::cancel_task_failed()),
            ("CancelTask", ApiError::task_not_found()),
            ("CancelTask", ApiError::task_status_incorrect()),
            ("CancelTask", ApiError::task_action_not_supported()),
            ("ExportImage", ApiError::image_exporting()),
            ("ExportImage", ApiError::image_not_available()),
            (
                "CancelTask",
                ApiError::region_not_found(StatusCode::BAD_REQUEST),
            ),
            ("CopyImage", ApiError::image_not_available()),
            ("CopyImage", ApiError::image_copying()),
            ("CopyImage", ApiError::image_name_duplicated()),
            ("CopyImage", ApiError::incorrect_destination_region()),
            ("CopyImage", ApiError::encrypted_illegal()),
            ("CopyImage", ApiError::image_name_malformed(true)),
            ("CopyImage", ApiError::description_malformed(true)),
            ("CopyImage", ApiError::image_not_found()),
            ("DeleteImage", ApiError::image_importing()),
            ("DeleteImage", ApiError::image_exporting()),
            ("DescribeImages", ApiError::throttled()),
            ("DescribeImages", ApiError::service_unavailable()),
            ("DescribeImages", ApiError::internal_error()),
        ] {
            assert_eq!(
                ApiError::documented(action, &own.code, Some(own.status.as_u16())),
                Some(own.clone()),
                "{action} {}",
                own.code
            );
        }
    }
}
