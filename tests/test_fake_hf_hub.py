"""The fake Hub answers huggingface_hub's own client the way the real Hub does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from tests.fakes.hf_hub import DEFAULT_TOKEN, DEFAULT_USER, FakeHfHub, git_blob_oid

REPO_ID = f"{DEFAULT_USER}/fake-check"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHfHub]:
    """One fake Hub for this module."""
    with FakeHfHub() as fake:
        yield fake


@pytest.fixture
def api(hub: FakeHfHub, monkeypatch: pytest.MonkeyPatch) -> HfApi:
    """A client with a write token, on an empty fake."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub.reset()
    return HfApi(endpoint=hub.endpoint, token=DEFAULT_TOKEN)


def test_upload_folder_then_download_round_trips(
    hub: FakeHfHub, api: HfApi, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    (source / "dir").mkdir(parents=True)
    (source / "dir" / "a.json").write_bytes(b'{"a": 1}')
    (source / "b.csv").write_bytes(b"x,y\n")
    url = api.create_repo(REPO_ID, repo_type="dataset", private=True)
    assert url.repo_id == REPO_ID and url.repo_type == "dataset"

    api.upload_folder(repo_id=REPO_ID, folder_path=source, repo_type="dataset")

    assert sorted(api.list_repo_files(REPO_ID, repo_type="dataset")) == [
        ".gitattributes",
        "b.csv",
        "dir/a.json",
    ]
    path = api.hf_hub_download(
        REPO_ID, "dir/a.json", repo_type="dataset", cache_dir=tmp_path / "cache"
    )
    assert Path(path).read_bytes() == b'{"a": 1}'
    info = api.repo_info(REPO_ID, repo_type="dataset")
    assert info.private and info.sha == hub.repo(REPO_ID).head.oid
    assert len(hub.commits) == 1


def test_visibility_missing_files_and_bad_tokens_raise_the_client_errors(
    hub: FakeHfHub, api: HfApi, tmp_path: Path
) -> None:
    hub.add_repo(REPO_ID, files={"x.txt": b"x"})
    anonymous = HfApi(endpoint=hub.endpoint, token=False)

    with pytest.raises(RepositoryNotFoundError):
        anonymous.repo_info(REPO_ID, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(f"{DEFAULT_USER}/missing", repo_type="dataset")
    with pytest.raises(RemoteEntryNotFoundError):
        api.hf_hub_download(REPO_ID, "nope.txt", repo_type="dataset", cache_dir=tmp_path)
    with pytest.raises(HfHubHTTPError) as rejected:
        HfApi(endpoint=hub.endpoint, token="hf_wrong").whoami()
    assert rejected.value.response.status_code == 401
    assert api.whoami()["name"] == DEFAULT_USER


def test_commits_dedupe_delete_and_fail_on_demand(hub: FakeHfHub, api: HfApi) -> None:
    hub.add_repo(REPO_ID, files={"keep.txt": b"same", "old.txt": b"old"})

    api.create_commit(
        REPO_ID,
        [CommitOperationAdd("keep.txt", b"same"), CommitOperationDelete("old.txt")],
        commit_message="tidy",
        repo_type="dataset",
    )
    assert set(hub.repo(REPO_ID).files) == {".gitattributes", "keep.txt"}
    tree = {f.path: f for f in api.list_repo_tree(REPO_ID, repo_type="dataset")}
    assert tree["keep.txt"].blob_id == git_blob_oid(b"same")

    hub.fail_next(1, status=500, route="commit")
    with pytest.raises(HfHubHTTPError) as failed:
        api.create_commit(
            REPO_ID, [CommitOperationAdd("new.txt", b"n")], commit_message="m", repo_type="dataset"
        )
    assert failed.value.response.status_code == 500
    assert hub.pending_failures == 0
    assert [r.status for r in hub.requests if r.route == "commit"] == [200, 500]
