"""stcn.utils.download.download_file and `stcn weights download`, against a local HTTP server only."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import pytest

from stcn.cli import main
from stcn.errors import CheckpointError
from stcn.utils import download as dl
from stcn.utils.download import DownloadError, download_file, partial_path
from stcn.weights import registry

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # several chunks, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _one_line(msg: str) -> None:
    assert msg and "\n" not in msg, msg


# --------------------------------------------------------------------------------------------------
# download_file
# --------------------------------------------------------------------------------------------------


def test_download_verifies_checksum_and_leaves_no_partial(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "f.bin"
    assert download_file(local_server.url("/f.bin"), dest, sha256=SHA.upper(), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()
    assert local_server.requests == [("/f.bin", None)]


def test_checksum_mismatch_keeps_no_file(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as err:
        download_file(local_server.url("/f.bin"), dest, sha256="0" * 64, progress=False)
    _one_line(str(err.value))
    assert "sha256" in str(err.value) and local_server.url("/f.bin") in str(err.value)
    assert not dest.exists() and not partial_path(dest).exists()


def test_mismatch_does_not_replace_an_existing_file(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_file(local_server.url("/f.bin"), dest, sha256="0" * 64, progress=False)
    assert dest.read_bytes() == b"old"


def test_resume_sends_range_and_completes(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    half = len(PAYLOAD) // 2
    partial_path(dest).write_bytes(PAYLOAD[:half])
    download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False)
    assert local_server.requests == [("/f.bin", f"bytes={half}-")]
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()


def test_resume_against_a_server_that_ignores_range(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    local_server.ignore_range = True
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(PAYLOAD[:1000])
    download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False)
    assert local_server.requests[0][1] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD  # rewritten, not appended


def test_resume_of_an_already_complete_partial_file(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(PAYLOAD)
    download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False)  # server answers 416
    assert dest.read_bytes() == PAYLOAD


def test_no_resume_starts_over(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(b"garbage")
    download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False, resume=False)
    assert local_server.requests == [("/f.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_leaves_no_final_file_then_resumes(local_server, tmp_path):
    local_server.files["/f.bin"] = PAYLOAD
    local_server.drop_after = 1024 * 1024
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as err:
        download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False)
    _one_line(str(err.value))
    assert "interrupted" in str(err.value) and str(partial_path(dest)) in str(err.value)
    assert not dest.exists()
    assert partial_path(dest).read_bytes() == PAYLOAD[: 1024 * 1024]

    local_server.drop_after = None  # the connection is back: the same call continues the partial file
    download_file(local_server.url("/f.bin"), dest, sha256=SHA, progress=False)
    assert local_server.requests[-1] == ("/f.bin", f"bytes={1024 * 1024}-")
    assert dest.read_bytes() == PAYLOAD


def test_connection_refused_is_one_line(closed_port, tmp_path):
    url = f"http://127.0.0.1:{closed_port}/f.bin"
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, progress=False, timeout=5)
    msg = str(err.value)
    _one_line(msg)
    assert url in msg and "refused" in msg.lower()
    assert "check your internet connection" in msg and str(dest) in msg
    assert not dest.exists()


def test_http_error_is_one_line(local_server, tmp_path):
    with pytest.raises(DownloadError) as err:
        download_file(local_server.url("/missing.bin"), tmp_path / "m.bin", progress=False)
    _one_line(str(err.value))
    assert "HTTP 404" in str(err.value)
    assert not (tmp_path / "m.bin").exists() and not partial_path(tmp_path / "m.bin").exists()


def test_progress_bar_goes_to_stderr(local_server, tmp_path, capsys):
    local_server.files["/f.bin"] = PAYLOAD
    download_file(local_server.url("/f.bin"), tmp_path / "f.bin", progress=True, desc="f.bin")
    out, err = capsys.readouterr()
    assert out == "" and "f.bin" in err


def test_check_rejects_the_file(local_server, tmp_path):
    from stcn.errors import UserError

    local_server.files["/f.bin"] = b"<html>quota exceeded</html>"

    def check(path: Path) -> None:
        raise UserError(f"{path}: not a checkpoint")

    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="not usable"):
        download_file(local_server.url("/f.bin"), dest, progress=False, check=check)
    assert not dest.exists() and not partial_path(dest).exists()


def test_google_drive_urls_go_through_gdown(tmp_path, monkeypatch):
    """No network: gdown.download is replaced; the wrapper must verify and publish what it writes."""
    import gdown

    calls = []

    def fake_download(*, url, output, quiet, resume):
        calls.append((url, output, resume))
        Path(output).write_bytes(PAYLOAD)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    url = "https://drive.google.com/uc?id=abc"
    dest = tmp_path / "w.pth"
    download_file(url, dest, sha256=SHA, progress=False)
    assert calls == [(url, str(partial_path(dest)), True)]
    assert dest.read_bytes() == PAYLOAD and not partial_path(dest).exists()

    with pytest.raises(DownloadError, match="sha256"):
        download_file(url, tmp_path / "x.pth", sha256="1" * 64, progress=False)
    assert not (tmp_path / "x.pth").exists()


def test_gdown_connection_error_is_one_line(tmp_path, monkeypatch, closed_port):
    import gdown
    import requests

    def fake_download(*, url, output, quiet, resume):  # what requests raises when offline
        return requests.get(f"http://127.0.0.1:{closed_port}/", timeout=5)

    monkeypatch.setattr(gdown, "download", fake_download)
    with pytest.raises(DownloadError) as err:
        download_file("https://drive.google.com/uc?id=abc", tmp_path / "w.pth", progress=False)
    msg = str(err.value)
    _one_line(msg)
    assert "Connection refused" in msg and "HTTPConnection(" not in msg and "https://drive.google.com/uc?id=abc" in msg


def test_is_google_drive():
    assert dl.is_google_drive("https://drive.google.com/uc?id=1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm")
    assert not dl.is_google_drive("http://127.0.0.1:8000/drive.google.com")


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------


def test_registry_paths(stcn_home, monkeypatch, tmp_path):
    assert registry.cache_dir() == stcn_home
    assert registry.cached_path("s012") == stcn_home / "weights" / "stcn_s012.pth"
    assert registry.cached_path("s03") == stcn_home / "weights" / "stcn_s03.pth"
    assert registry.get("s012").url == "https://drive.google.com/uc?id=1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm"
    assert registry.get("s03").url == "https://drive.google.com/uc?id=1JllXPJZola0G-g1aUQfXe9nLMBioj-aH"
    assert registry.default_weights() is None
    registry.cached_path("s012").parent.mkdir(parents=True)
    registry.cached_path("s012").write_bytes(b"x")
    assert registry.default_weights() == registry.cached_path("s012")

    monkeypatch.delenv("STCN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.cache_dir() == tmp_path / "home" / ".cache" / "stcn"


def test_missing_weights_message(stcn_home):
    msg = registry.missing_weights_message()
    _one_line(msg)
    assert "stcn weights download s012" in msg and "--weights PATH" in msg
    assert "stcn weights download s03" in registry.missing_weights_message("s03")


def test_unknown_weights_name(stcn_home):
    with pytest.raises(registry.UnknownWeightsError, match="s012"):
        registry.cached_path("nope")


# --------------------------------------------------------------------------------------------------
# stcn weights download
# --------------------------------------------------------------------------------------------------


def _serve_as(monkeypatch, name: str, url: str) -> None:
    monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(registry.REGISTRY[name], url=url))


def test_cli_download(local_server, stcn_home, monkeypatch, capsys, skeleton_sd, tmp_path):
    import torch

    torch.save(skeleton_sd, tmp_path / "served.pth")  # every key and shape of STCN, a few bytes each
    data = (tmp_path / "served.pth").read_bytes()
    local_server.files["/stcn_s012.pth"] = data
    _serve_as(monkeypatch, "s012", local_server.url("/stcn_s012.pth"))
    target = stcn_home / "weights" / "stcn_s012.pth"

    assert main(["weights", "download", "s012", "--quiet"]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == str(target)
    assert target.read_bytes() == data
    assert registry.default_weights() == target

    assert main(["weights", "download", "s012"]) == 0  # already there: nothing fetched
    out, err = capsys.readouterr()
    assert out.strip() == str(target) and "already" in err
    assert len(local_server.requests) == 1

    assert main(["weights", "download", "--force", "--quiet"]) == 0  # s012 is the default name
    assert len(local_server.requests) == 2 and target.read_bytes() == data


def test_cli_download_offline(closed_port, stcn_home, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port}/stcn_s03.pth"
    _serve_as(monkeypatch, "s03", url)
    assert main(["weights", "download", "s03", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stcn: error:") and err.count("\n") == 1, err
    assert url in err and str(stcn_home / "weights" / "stcn_s03.pth") in err
    assert not (stcn_home / "weights" / "stcn_s03.pth").exists()


def test_cli_download_rejects_a_non_checkpoint(local_server, stcn_home, monkeypatch, capsys):
    local_server.files["/stcn_s03.pth"] = b"<html>Google Drive - quota exceeded</html>"
    _serve_as(monkeypatch, "s03", local_server.url("/stcn_s03.pth"))
    assert main(["weights", "download", "s03", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stcn: error:") and err.count("\n") == 1 and "not usable" in err, err
    assert not (stcn_home / "weights" / "stcn_s03.pth").exists()
    assert not partial_path(stcn_home / "weights" / "stcn_s03.pth").exists()


def test_cli_list(stcn_home, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "s012 (default)" in out and "s03" in out and "not downloaded" in out


def test_resolve_takes_a_path_or_a_registry_name(stcn_home, tmp_path):
    """One lookup serves every command: an existing file, else a registry name, else one clear line."""
    assert registry.resolve("demo") == registry.cached_path("demo")
    assert registry.resolve(None, default="demo") == registry.cached_path("demo")
    ckpt = tmp_path / "my.pth"
    ckpt.write_bytes(b"x")
    assert registry.resolve(ckpt) == ckpt
    (tmp_path / "s03").write_bytes(b"x")  # a file named like a registry entry wins: the user typed a path
    assert registry.resolve(tmp_path / "s03") == tmp_path / "s03"
    cases = {
        None: "no s012 weights found",
        "s2m": "stcn weights download s2m",
        str(tmp_path / "nope.pth"): "--s2m: checkpoint not found",
        str(tmp_path): "is not a checkpoint file",
    }
    for given, message in cases.items():
        with pytest.raises(CheckpointError, match=re.escape(message)) as info:
            registry.resolve(given, option="--s2m")
        _one_line(str(info.value))
    with pytest.raises(CheckpointError, match="pass --fusion PATH"):
        registry.resolve(None, default="fusion", option="--fusion")
