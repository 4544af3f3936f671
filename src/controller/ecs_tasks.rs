//! ECS tasks (ImportImage, ExportImage) as the controllers see them: a snapshot of one task,
//! lookups by id and by resource, and CancelTask with its documented error codes sorted into
//! what they mean for a finalizer.

use k8s_openapi::jiff::Timestamp;

use crate::ecs::{DescribeTasksRequest, EcsClient, EcsError, MAX_PAGE_SIZE, Task, TaskAttribute};

/// ECS's view of one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSnapshot {
    pub task_id: String,
    pub state: TaskState,
    /// As ECS reports it, e.g. `45%`; task listings carry none.
    pub progress: Option<String>,
    /// The failure ECS reports for a failed task: (code, message).
    pub error: Option<(String, String)>,
    /// The OSS object an export wrote, when ECS names it.
    pub oss_object: Option<String>,
    /// When ECS created the task, to the minute (ECS gives no finer time).
    pub created: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// `Waiting` or `Processing`: still running, cancellable.
    Running,
    Finished,
    Failed,
    /// `Cancelled`, `Deleted` or anything else that will not run again.
    Ended(String),
}

impl TaskState {
    pub fn from_ecs(status: &str) -> TaskState {
        match status {
            "Waiting" | "Processing" | "Paused" => TaskState::Running,
            "Finished" => TaskState::Finished,
            "Failed" => TaskState::Failed,
            other => TaskState::Ended(other.to_string()),
        }
    }

    /// The status as ECS names it, for `status.taskStatus`.
    pub fn label(&self) -> &str {
        match self {
            TaskState::Running => "Processing",
            TaskState::Finished => "Finished",
            TaskState::Failed => "Failed",
            TaskState::Ended(other) => other,
        }
    }
}

impl TaskSnapshot {
    pub fn from_listed(task: &Task) -> Self {
        TaskSnapshot {
            task_id: task.task_id.clone(),
            state: TaskState::from_ecs(task.task_status.as_str()),
            progress: None,
            error: None,
            oss_object: None,
            created: task.creation_time.as_deref().and_then(task_time),
        }
    }

    pub fn from_attribute(task: &TaskAttribute) -> Self {
        let oss_object = task.operation_progress.iter().find_map(|o| {
            o.related_items
                .iter()
                .find(|item| item.name == "OSSObject")
                .map(|item| item.value.clone())
        });
        TaskSnapshot {
            task_id: task.task_id.clone(),
            state: TaskState::from_ecs(task.task_status.as_str()),
            progress: task.progress_percent().map(|p| format!("{p}%")),
            error: task.failure().map(|f| (f.code, f.message)),
            oss_object,
            created: task.creation_time.as_deref().and_then(task_time),
        }
    }
}

/// A task time as ECS writes it, `yyyy-MM-ddTHH:mmZ` (or with seconds).
fn task_time(text: &str) -> Option<Timestamp> {
    text.parse().ok().or_else(|| {
        let minutes = text.strip_suffix('Z')?;
        format!("{minutes}:00Z").parse().ok()
    })
}

/// One task by id, with progress and failure; `None` when ECS does not know it.
pub async fn describe(
    ecs: &EcsClient,
    region: &str,
    task_id: &str,
) -> Result<Option<TaskSnapshot>, EcsError> {
    match ecs.describe_task_attribute(region, task_id).await {
        Ok(task) => Ok(Some(TaskSnapshot::from_attribute(&task))),
        Err(e) if e.code() == Some("InvalidTaskId.NotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `action` tasks on `resource_id` (an image), newest first; only those in `status`
/// (`Processing`, `Finished` or `Failed`) when given.
pub async fn tasks_on(
    ecs: &EcsClient,
    region: &str,
    action: &str,
    resource_id: &str,
    status: Option<&str>,
) -> Result<Vec<TaskSnapshot>, EcsError> {
    let tasks = ecs
        .describe_all_tasks(&DescribeTasksRequest {
            region: region.to_string(),
            task_action: Some(action.to_string()),
            resource_ids: vec![resource_id.to_string()],
            task_status: status.map(str::to_string),
            page_size: Some(MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await?;
    Ok(tasks.iter().map(TaskSnapshot::from_listed).collect())
}

/// What a CancelTask call achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// ECS accepted the cancel.
    Yes,
    /// `InvalidTaskId.NotFound`: no such task, nothing runs.
    NoSuchTask,
    /// `InvalidTaskId.IncorrectTaskStatus`: the task finished (or failed) meanwhile.
    AlreadyEnded,
    /// `InvalidTaskId.TaskActionNotSupport`: ECS cannot cancel this task; it may still run.
    NotSupported,
}

/// The CancelTask error codes that say something definite about the task; any other error
/// (`CancelTaskFailed`, throttling, an outage) leaves the task possibly running.
pub fn classify_cancel_error(code: &str) -> Option<Cancelled> {
    match code {
        "InvalidTaskId.NotFound" => Some(Cancelled::NoSuchTask),
        "InvalidTaskId.IncorrectTaskStatus" => Some(Cancelled::AlreadyEnded),
        "InvalidTaskId.TaskActionNotSupport" => Some(Cancelled::NotSupported),
        _ => None,
    }
}

pub async fn cancel(ecs: &EcsClient, region: &str, task_id: &str) -> Result<Cancelled, EcsError> {
    match ecs.cancel_task(region, task_id).await {
        Ok(()) => Ok(Cancelled::Yes),
        Err(e) => match e.code().and_then(classify_cancel_error) {
            Some(meaning) => Ok(meaning),
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_task_errors_are_classified_per_the_docs() {
        assert_eq!(
            classify_cancel_error("InvalidTaskId.NotFound"),
            Some(Cancelled::NoSuchTask)
        );
        assert_eq!(
            classify_cancel_error("InvalidTaskId.IncorrectTaskStatus"),
            Some(Cancelled::AlreadyEnded)
        );
        assert_eq!(
            classify_cancel_error("InvalidTaskId.TaskActionNotSupport"),
            Some(Cancelled::NotSupported)
        );
        assert_eq!(
            classify_cancel_error("CancelTaskFailed"),
            None,
            "a failed cancel leaves the task running: the finalizer must stay"
        );
        assert_eq!(classify_cancel_error("Throttling"), None);
    }

    #[test]
    fn task_times_in_minutes_or_seconds_are_read() {
        let minute: Timestamp = "2026-11-27T18:46:00Z".parse().unwrap();
        assert_eq!(task_time("2026-11-27T18:46Z"), Some(minute));
        assert_eq!(task_time("2026-11-27T18:46:00Z"), Some(minute));
        assert_eq!(task_time(""), None);
        assert_eq!(task_time("yesterday"), None);
    }

    #[test]
    fn task_states_map_every_ecs_status() {
        assert_eq!(TaskState::from_ecs("Processing"), TaskState::Running);
        assert_eq!(TaskState::from_ecs("Waiting"), TaskState::Running);
        assert_eq!(TaskState::from_ecs("Finished"), TaskState::Finished);
        assert_eq!(TaskState::from_ecs("Failed"), TaskState::Failed);
        assert_eq!(
            TaskState::from_ecs("Cancelled"),
            TaskState::Ended("Cancelled".into())
        );
        assert_eq!(TaskState::from_ecs("Cancelled").label(), "Cancelled");
    }
}
