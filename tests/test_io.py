import json

import pytest

from glass.io import ResumableJsonl, atomic_open, read_jsonl, write_json, write_jsonl


def test_atomic_open_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("finished work")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "finished work"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_write_json_is_canonical(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    write_json(tmp_path / "b.json", {"a": 2, "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_resumable_jsonl_drops_a_torn_last_line_and_continues(tmp_path):
    path = tmp_path / "scratch.jsonl"
    with ResumableJsonl(path, "id") as done:
        done.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    with open(path, "a") as handle:  # simulate a crash in the middle of writing record "c"
        handle.write('{"id": "c", "v"')
    with ResumableJsonl(path, "id") as done:
        assert "a" in done and "b" in done and "c" not in done
        done.append([{"id": "c", "v": 3}])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]


def test_write_jsonl_round_trip(tmp_path):
    records = [{"image_id": "x", "caption": "café ☕"}, {"image_id": "y", "classes": []}]
    assert write_jsonl(tmp_path / "r.jsonl", records) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == records


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    write_json(tmp_path / "p.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_text_with_lone_surrogates_is_repaired_and_every_writer_writes_utf8(tmp_path):
    from glass.io import clean_caption, repair_text

    assert repair_text("dog \ud83d\udc36") == ("dog \U0001f436", [])   # a split pair is joined
    fixed, notes = repair_text("dog \ud83d!")
    assert fixed == "dog \ufffd!" and notes == ["1 lone UTF-16 surrogate(s) replaced by U+FFFD"]
    cleaned, notes = clean_caption("A\x00 d\u200bog\u202e\ton a\nsofa \ud800")
    assert cleaned == "A dog on a sofa \ufffd" and len(notes) == 2
    assert clean_caption("כלב על ספה") == ("כלב על ספה", [])   # right-to-left text is kept
    record = {"image_id": "x", "caption": "bad \udc00 text"}
    write_jsonl(tmp_path / "a.jsonl", [record])
    write_json(tmp_path / "a.json", record)
    with ResumableJsonl(tmp_path / "r.jsonl", key_field="image_id") as journal:
        journal.append([record])
    for name in ("a.jsonl", "a.json", "r.jsonl"):
        assert "bad \ufffd text" in (tmp_path / name).read_bytes().decode("utf-8")
