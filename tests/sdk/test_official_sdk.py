"""Conformance of the ECS emulator with the official Alibaba Cloud Python SDK.

Runs the built binary (ECS_IMAGE_OPERATOR_BIN, default $CARGO_TARGET_DIR/debug/ecs-image-operator,
CARGO_TARGET_DIR defaulting to target/) as
`emulator --listen 127.0.0.1:0 --copy-seconds 2 --region-concurrency 1` and drives it with the
unmodified `alibabacloud-ecs20140526` client in every way production code signs requests: V3
(`ACS3-HMAC-SHA256`, the default), V1 (`signature_algorithm='v2'`), and both again with STS
credentials obtained from the emulator's AssumeRoleWithOIDC.

Run with the venv from scripts/sdk-venv.sh:  "$(scripts/sdk-venv.sh)/bin/python" -m pytest tests/sdk
"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from alibabacloud_ecs20140526 import models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import exceptions
from alibabacloud_tea_openapi import utils_models as open_api_models
from darabonba.runtime import RuntimeOptions

ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BINARY = os.environ.get(
    "ECS_IMAGE_OPERATOR_BIN", str(TARGET_DIR / "debug" / "ecs-image-operator")
)
COPY_SECONDS = 2.0
SOURCE_REGION = "cn-hangzhou"
SOURCE_IMAGE = "m-demo0001"
ALL_STATUSES = "Creating,Waiting,Available,UnAvailable,CreateFailed"
# Not a signed JWT: the emulator, like STS, only checks the three-part shape.
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"

# Each (test, mode) copies into its own destination region: with one running copy per region,
# sharing a region would make tests wait on each other.
_REGIONS = iter(
    [
        "cn-shanghai", "cn-beijing", "cn-qingdao", "cn-zhangjiakou", "cn-huhehaote",
        "cn-wulanchabu", "cn-shenzhen", "cn-heyuan", "cn-guangzhou", "cn-chengdu",
        "cn-hongkong", "ap-southeast-1", "ap-southeast-3", "ap-southeast-5",
        "ap-southeast-6", "ap-southeast-7", "ap-northeast-1", "ap-northeast-2",
        "eu-central-1", "eu-west-1", "us-west-1", "us-east-1", "me-east-1",
        "me-central-1", "cn-nanjing", "cn-fuzhou",
    ]
)
_REGIONS_LOCK = threading.Lock()


def fresh_region():
    with _REGIONS_LOCK:
        return next(_REGIONS)


class Emulator:
    def __init__(self, process, base_url):
        self.process = process
        self.base_url = base_url
        self.endpoint = base_url.removeprefix("http://")

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + "/_emulator/" + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def assume_role_with_oidc(self):
        """AssumeRoleWithOIDC the way credentials libraries send it: anonymous POST, common
        parameters in the query, the rest as a form body."""
        query = urllib.parse.urlencode(
            {
                "Action": "AssumeRoleWithOIDC",
                "Version": "2015-04-01",
                "Format": "JSON",
                "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        form = urllib.parse.urlencode(
            {
                "RoleArn": "acs:ram::1234567890123456:role/image-operator",
                "OIDCProviderArn": "acs:ram::1234567890123456:oidc-provider/ack-rrsa-test",
                "OIDCToken": OIDC_TOKEN,
                "RoleSessionName": "sdk-conformance",
                "DurationSeconds": "900",
            }
        ).encode()
        request = urllib.request.Request(
            f"{self.base_url}/?{query}",
            data=form,
            method="POST",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["Credentials"]


@pytest.fixture(scope="module")
def emulator():
    process = subprocess.Popen(
        [
            BINARY,
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--copy-seconds",
            str(COPY_SECONDS),
            "--region-concurrency",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"ecs-emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, f"unexpected first line from the emulator: {line!r}"
        yield Emulator(process, match.group(1))
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0, "emulator did not shut down cleanly on SIGTERM"


MODES = ["v3", "v2", "sts-v3", "sts-v2"]


def make_client(emulator, mode, secret=None, token=None):
    """An official SDK client for `mode`; `secret`/`token` override the real ones."""
    if mode.startswith("sts-"):
        credentials = emulator.assume_role_with_oidc()
        key_id = credentials["AccessKeyId"]
        key_secret = credentials["AccessKeySecret"]
        security_token = credentials["SecurityToken"]
    else:
        key_id, key_secret, security_token = "testid", "testsecret", None
    config = open_api_models.Config(
        access_key_id=key_id,
        access_key_secret=secret or key_secret,
        security_token=token or security_token,
        region_id=SOURCE_REGION,
        endpoint=emulator.endpoint,
        protocol="http",
        signature_algorithm="v2" if mode.endswith("v2") else None,
    )
    return Client(config)


RUNTIME = RuntimeOptions()


def copy(client, destination, **extra):
    request = models.CopyImageRequest(
        region_id=SOURCE_REGION,
        image_id=SOURCE_IMAGE,
        destination_region_id=destination,
        **extra,
    )
    return client.copy_image_with_options(request, RUNTIME).body.image_id


def describe(client, region, image_id=None, status=ALL_STATUSES):
    request = models.DescribeImagesRequest(region_id=region, image_id=image_id, status=status)
    return client.describe_images_with_options(request, RUNTIME).body


def cancel(client, region, image_id):
    request = models.CancelCopyImageRequest(region_id=region, image_id=image_id)
    return client.cancel_copy_image_with_options(request, RUNTIME)


def api_error(call):
    """Runs `call`, which must fail with an API error, and returns the SDK's exception."""
    with pytest.raises(exceptions.AlibabaCloudException) as info:
        call()
    return info.value


@pytest.mark.parametrize("mode", MODES)
def test_copy_progress_rises_then_cancel_removes_the_image(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    image_id = copy(
        client,
        region,
        destination_image_name="conformance-copy",
        destination_description="copied by the SDK conformance test",
        tag=[models.CopyImageRequestTag(key="imageops.dev/owner-uid", value="uid 1*")],
    )
    assert re.fullmatch(r"m-[a-z0-9]{20}", image_id)

    progress = []
    for _ in range(6):
        body = describe(client, region, image_id)
        assert body.total_count == 1
        image = body.images.image[0]
        assert image.status == "Creating"
        assert image.is_copied is True
        assert image.tags.tag[0].tag_key == "imageops.dev/owner-uid"
        assert image.tags.tag[0].tag_value == "uid 1*"
        progress.append(int(image.progress.rstrip("%")))
        time.sleep(COPY_SECONDS / 10)
    assert progress == sorted(progress) and progress[-1] > progress[0], progress
    assert progress[-1] < 100

    # Without a Status filter DescribeImages shows only Available images, like the real API.
    assert describe(client, region, image_id, status=None).total_count == 0

    cancel(client, region, image_id)
    assert describe(client, region, image_id).total_count == 0


@pytest.mark.parametrize("mode", MODES)
def test_finished_copy_cannot_be_cancelled(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    image_id = copy(client, region)
    deadline = time.monotonic() + COPY_SECONDS * 3
    while True:
        image = describe(client, region, image_id).images.image[0]
        if image.status == "Available" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (image.status, image.progress, image.usable) == ("Available", "100%", True)
    # Now also visible without a Status filter.
    assert describe(client, region, image_id, status=None).total_count == 1

    error = api_error(lambda: cancel(client, region, image_id))
    assert isinstance(error, exceptions.ClientException)
    assert (error.status_code, error.code) == (400, "IncorrectImageStatus")
    assert "The image is copied finished." in error.message


@pytest.mark.parametrize("mode", MODES)
def test_queued_copy_shows_waiting(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    first = copy(client, region)
    second = copy(client, region)
    statuses = {i.image_id: (i.status, i.progress) for i in describe(client, region).images.image}
    assert statuses[first][0] == "Creating"
    assert statuses[second] == ("Waiting", "0%")
    # Only queued images, selected by Status.
    waiting = describe(client, region, status="Waiting").images.image
    assert [i.image_id for i in waiting] == [second]
    cancel(client, region, second)
    cancel(client, region, first)
    assert describe(client, region).total_count == 0


@pytest.mark.parametrize("mode", MODES)
def test_unknown_image_is_not_found(emulator, mode):
    client = make_client(emulator, mode)
    error = api_error(
        lambda: client.copy_image_with_options(
            models.CopyImageRequest(
                region_id=SOURCE_REGION, image_id="m-doesnotexist", destination_region_id="cn-shanghai"
            ),
            RUNTIME,
        )
    )
    assert (error.status_code, error.code) == (404, "InvalidImageId.NotFound")
    assert error.data["Message"] == "The specified ImageId does not exist."
    assert error.data["RequestId"] and error.data["HostId"]

    error = api_error(lambda: cancel(client, "cn-shanghai", "m-doesnotexist"))
    assert (error.status_code, error.code) == (404, "InvalidImageId.NotFound")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_secret_is_a_signature_error(emulator, mode):
    client = make_client(emulator, mode, secret="not-the-secret")
    error = api_error(lambda: describe(client, "cn-shanghai"))
    assert (error.status_code, error.code) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:" in error.message


@pytest.mark.parametrize("mode", ["sts-v3", "sts-v2"])
def test_sts_token_must_match_the_temporary_key(emulator, mode):
    other_token = emulator.assume_role_with_oidc()["SecurityToken"]
    client = make_client(emulator, mode, token=other_token)
    error = api_error(lambda: describe(client, "cn-shanghai"))
    assert (error.status_code, error.code) == (400, "InvalidSecurityToken.MismatchWithAccessKey")


@pytest.mark.parametrize("signature_algorithm", [None, "v2"])
def test_expired_sts_credentials_are_rejected(emulator, signature_algorithm):
    credentials = emulator.admin("POST", "sts-credentials", {"durationSeconds": 1})["Credentials"]
    client = Client(
        open_api_models.Config(
            access_key_id=credentials["AccessKeyId"],
            access_key_secret=credentials["AccessKeySecret"],
            security_token=credentials["SecurityToken"],
            region_id=SOURCE_REGION,
            endpoint=emulator.endpoint,
            protocol="http",
            signature_algorithm=signature_algorithm,
        )
    )
    describe(client, "cn-shanghai")
    time.sleep(1.2)
    error = api_error(lambda: describe(client, "cn-shanghai"))
    assert (error.status_code, error.code) == (400, "InvalidSecurityToken.Expired")


def test_describe_regions_and_call_log(emulator):
    client = make_client(emulator, "v3")
    regions = client.describe_regions_with_options(
        models.DescribeRegionsRequest(accept_language="en-US"), RUNTIME
    ).body.regions.region
    hangzhou = next(r for r in regions if r.region_id == "cn-hangzhou")
    assert (hangzhou.local_name, hangzhou.status) == ("China (Hangzhou)", "available")

    api_error(lambda: cancel(client, "cn-shanghai", "m-doesnotexist"))

    calls = emulator.admin("GET", "calls")
    assert calls["counts"]["DescribeRegions"] >= 1
    assert calls["counts"]["CancelCopyImage"] >= 1
    failed = [c for c in calls["calls"] if c["code"] == "InvalidImageId.NotFound"]
    assert failed and failed[-1]["action"] == "CancelCopyImage"
    assert failed[-1]["regionId"] == "cn-shanghai"


# --- ImportImage / ExportImage tasks, DescribeTasks, DescribeTaskAttribute, CancelTask ------


def import_image(client, region, client_token=None, tags=(), bucket="images"):
    request = models.ImportImageRequest(
        region_id=region,
        disk_device_mapping=[
            models.ImportImageRequestDiskDeviceMapping(
                ossbucket=bucket, ossobject="disks/web.qcow2", format="QCOW2", disk_image_size=20
            )
        ],
        client_token=client_token,
        tag=[models.ImportImageRequestTag(key=k, value=v) for k, v in tags],
    )
    return client.import_image_with_options(request, RUNTIME).body


def export_image(client, region, image_id):
    request = models.ExportImageRequest(
        region_id=region, image_id=image_id, ossbucket="exports", image_format="qcow2"
    )
    return client.export_image_with_options(request, RUNTIME).body.task_id


def describe_tasks(client, region, **filters):
    filters.setdefault("page_size", 100)
    request = models.DescribeTasksRequest(region_id=region, **filters)
    return client.describe_tasks_with_options(request, RUNTIME).body


def task_attribute(client, region, task_id):
    request = models.DescribeTaskAttributeRequest(region_id=region, task_id=task_id)
    return client.describe_task_attribute_with_options(request, RUNTIME).body


def cancel_task(client, region, task_id):
    request = models.CancelTaskRequest(region_id=region, task_id=task_id)
    return client.cancel_task_with_options(request, RUNTIME)


def seed_task(emulator, region, action, status="Processing"):
    body = {"regionId": region, "taskAction": action, "taskStatus": status}
    return emulator.admin("POST", "tasks", body)["taskId"]


@pytest.mark.parametrize("mode", MODES)
def test_import_image_with_client_token_and_tags(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    token = f"import-{mode}"
    tags = [("imageops.dev/owner-uid", "uid 9*"), ("team", "web")]
    first = import_image(client, region, client_token=token, tags=tags)
    assert re.fullmatch(r"m-[a-z0-9]{20}", first.image_id)
    assert re.fullmatch(r"t-[a-z0-9]{20}", first.task_id)
    # The same token and parameters answer the same image and task instead of a second import.
    again = import_image(client, region, client_token=token, tags=tags)
    assert (again.image_id, again.task_id) == (first.image_id, first.task_id)
    error = api_error(
        lambda: import_image(client, region, client_token=token, tags=tags, bucket="other")
    )
    assert (error.status_code, error.code) == (400, "IdempotentParameterMismatch")

    image = describe(client, region, first.image_id).images.image[0]
    assert image.status == "Creating"
    assert {(t.tag_key, t.tag_value) for t in image.tags.tag} == set(tags)
    assert describe_tasks(client, region).total_count == 1


@pytest.mark.parametrize("mode", MODES)
def test_describe_tasks_filters(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    emulator.admin("POST", "images", {"regionId": region, "imageId": f"m-export-{mode}"})
    first = import_image(client, region)
    second = import_image(client, region)
    export = export_image(client, region, f"m-export-{mode}")
    redeploy = seed_task(emulator, region, "RedeployInstance")

    def ids(**filters):
        return sorted(t.task_id for t in describe_tasks(client, region, **filters).task_set.task)

    assert ids(task_ids=f"{first.task_id},{export}") == sorted([first.task_id, export])
    # ResourceIds is a list in the SDK, sent as ResourceIds.1, ResourceIds.2 …
    assert ids(resource_ids=[second.image_id, f"m-export-{mode}"]) == sorted(
        [second.task_id, export]
    )
    assert ids(task_action="ExportImage") == [export]
    assert ids(task_action="RedeployInstance") == [redeploy]
    # One task runs per region at a time: the first import processes, the rest wait.
    assert ids(task_status="Processing") == sorted([first.task_id, redeploy])
    assert ids(task_status="Finished") == []

    listed = describe_tasks(client, region, task_ids=first.task_id).task_set.task[0]
    assert (listed.task_action, listed.task_status, listed.support_cancel) == (
        "ImportImage",
        "Processing",
        "true",
    )
    assert listed.resource_id == first.image_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", listed.creation_time)

    page = describe_tasks(client, region, page_size=3, page_number=2)
    assert (page.total_count, page.page_number, page.page_size) == (4, 2, 3)
    assert len(page.task_set.task) == 1


@pytest.mark.parametrize("mode", ["v3", "sts-v2"])
def test_task_progress_rises_and_a_failed_task_says_why(emulator, mode):
    client = make_client(emulator, mode)
    region = fresh_region()
    emulator.admin(
        "POST",
        "faults",
        {"failTasks": [{"action": "ImportImage", "regionId": region, "count": 1}]},
    )
    failing = import_image(client, region)
    healthy = import_image(client, region)

    progress = []
    while True:
        body = task_attribute(client, region, failing.task_id)
        if body.task_status != "Processing":
            break
        assert body.operation_progress_set.operation_progress[0].error_code == ""
        progress.append(int(body.task_process.rstrip("%")))
        time.sleep(COPY_SECONDS / 10)
    assert len(progress) >= 2 and progress == sorted(progress), progress
    assert progress[-1] > progress[0]

    assert (body.task_status, body.task_process, body.failed_count) == ("Failed", "50%", 1)
    operation = body.operation_progress_set.operation_progress[0]
    assert (operation.operation_status, operation.error_code) == (
        "Failed",
        "ImportImage.OssObjectNotFound",
    )
    assert operation.error_msg
    assert describe(client, region, failing.image_id).images.image[0].status == "CreateFailed"
    failed = describe_tasks(client, region, task_status="Failed").task_set.task
    assert [t.task_id for t in failed] == [failing.task_id]

    # The rule was used up: the next import runs to the end.
    deadline = time.monotonic() + COPY_SECONDS * 4
    while task_attribute(client, region, healthy.task_id).task_status != "Finished":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    body = task_attribute(client, region, healthy.task_id)
    assert (body.task_process, body.success_count, body.support_cancel) == ("100%", 1, "false")
    assert body.operation_progress_set.operation_progress[0].operation_status == "Success"
    assert describe(client, region, healthy.image_id).images.image[0].status == "Available"


@pytest.mark.parametrize("mode", MODES)
def test_cancel_task_answers_each_documented_code(emulator, mode):
    client = make_client(emulator, mode)
    region = SOURCE_REGION

    error = api_error(lambda: cancel_task(client, region, "t-doesnotexist"))
    assert (error.status_code, error.code) == (400, "InvalidTaskId.NotFound")
    assert error.data["Message"] == 'The specified "TaskId" is not found.'

    redeploy = seed_task(emulator, region, "RedeployInstance")
    error = api_error(lambda: cancel_task(client, region, redeploy))
    assert (error.status_code, error.code) == (403, "InvalidTaskId.TaskActionNotSupport")
    assert error.data["Message"] == "The specified task action not support."

    finished = seed_task(emulator, region, "ExportImage", status="Finished")
    error = api_error(lambda: cancel_task(client, region, finished))
    assert (error.status_code, error.code) == (403, "InvalidTaskId.IncorrectTaskStatus")
    assert error.data["Message"] == "The specified task status is not invalid."

    error = api_error(lambda: cancel_task(client, "mars-1", redeploy))
    assert (error.status_code, error.code) == (400, "InvalidRegionId.NotFound")

    imported = import_image(client, region)
    emulator.admin("POST", "faults", {"cancelTaskFailed": True})
    try:
        error = api_error(lambda: cancel_task(client, region, imported.task_id))
    finally:
        emulator.admin("POST", "faults", {"cancelTaskFailed": False})
    assert (error.status_code, error.code) == (403, "CancelTaskFailed")
    assert error.data["Message"] == "The task is failed to cancel, Please contact the administrator."

    cancel_task(client, region, imported.task_id)
    assert task_attribute(client, region, imported.task_id).task_status == "Deleted"
    assert describe(client, region, imported.image_id).total_count == 0
    error = api_error(lambda: cancel_task(client, region, imported.task_id))
    assert error.code == "InvalidTaskId.IncorrectTaskStatus"
