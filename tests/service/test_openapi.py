"""The OpenAPI document as a new user reads it in /docs: plain words, examples, binary answers."""

from __future__ import annotations

BINARY = {"type": "string", "format": "binary"}
JARGON = ("f of", "z of", "decode(", "z_t", "(F,)", "(T, Z)")


def test_every_operation_has_a_plain_summary_and_an_example(client):
    paths = client.get("/openapi.json").json()["paths"]
    operations = [(path, method, op) for path, item in paths.items()
                  for method, op in item.items()]
    assert len(operations) >= 10
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary") and not op["summary"].islower(), where
        description = op.get("description", "")
        assert "Example: `curl " in description, where
        assert not any(word in description for word in JARGON), (where, description)


def test_binary_answers_are_declared_binary_and_json_ones_have_examples(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path in ("/swap", "/generate", "/decode", "/jobs/{job_id}"):
        operation = next(iter(paths[path].values()))
        content = operation["responses"]["200"]["content"]
        for media_type in ("video/mp4", "image/gif", "image/png", "application/x-npz"):
            assert content[media_type]["schema"] == BINARY, (path, media_type)
        assert "example" in content["application/json"], path
    encode = paths["/encode"]["post"]["responses"]["200"]["content"]
    assert encode["application/x-npz"]["schema"] == BINARY
    schemas = document["components"]["schemas"]
    assert schemas["EncodePublic"]["examples"][0]["appearance"]["mean"]
    assert schemas["DecodeRequest"]["examples"][0]["motion"]["mean"]
    for path in ("/health", "/problems/{slug}"):
        assert "example" in paths[path]["get"]["responses"]["200"]["content"]["application/json"]


def test_binary_answers_come_as_files_to_save(client, mp4):
    files = {"appearance": ("a.mp4", mp4, "video/mp4"), "motion": ("b.mp4", mp4, "video/mp4")}
    for fmt in ("mp4", "gif", "png", "npz"):
        r = client.post(f"/swap?format={fmt}", files=files)
        assert r.headers["content-disposition"] == f'attachment; filename="vdis.{fmt}"', fmt
    assert "content-disposition" not in client.post("/swap?format=json", files=files).headers


def test_redoc_is_off_and_the_docs_call_nothing_outside(client):
    assert client.get("/redoc").status_code == 404  # its bundle loads a logo from cdn.redoc.ly
    docs = client.get("/docs").text
    assert "https://" not in docs and '"validatorUrl": null' in docs
