"""SavedModel export: signatures, equality with the in-memory model, loading without keras_cvae,
versioning, atomicity, and the inference wrapper and CLI around it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, project_lines, run_cli, write_idx_folder
from keras_cvae import export as export_module
from keras_cvae.export import export_saved_model, next_version
from keras_cvae.models.cvae import CVAE
from keras_cvae.serving_client import load_client
from keras_cvae.tasks.classes import ClassesTask, restyle


@pytest.fixture(scope="module")
def model():
    model = CVAE(latent_dim=4, hidden_units=(32,), seed=0, class_names=list("abcdefghij"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 32), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def export_root(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    export_saved_model(model, root, dataset="mnist")
    return root


def test_the_export_draws_from_the_model_prior_and_gives_its_elbo_terms(model, export_root):
    from keras_cvae.evaluation.estimators import KerasBackend
    from keras_cvae.serving_client import load_client

    client, keras_backend = load_client(export_root), KerasBackend(model)
    rows = np.repeat(np.arange(10), 500).reshape(-1, 1)
    z = client.sample_latent(rows, seed=11)
    np.testing.assert_allclose(z, keras_backend.sample_latent(rows, 11), atol=1e-6)  # the prior's draw, in the graph
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.06)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.06)
    images = np.random.default_rng(2).random((6, 28, 28, 1)).astype("float32")
    eps = np.random.default_rng(3).standard_normal((6, 4)).astype("float32")
    by_export, by_model = client.elbo_terms(images, rows[:6], eps), keras_backend.elbo_terms(images, rows[:6], eps)
    for name in ("reconstruction", "kl"):
        np.testing.assert_allclose(by_export[name], by_model[name], rtol=1e-5)
    np.testing.assert_allclose(client.kl_per_dimension(images, rows[:6]).sum(axis=1), by_model["kl"], rtol=1e-5)


def test_layout_and_assets(export_root):
    version = export_root / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets" / "labels_vocabulary.txt").read_text().split() == list("abcdefghij")
    assert json.loads((version / "assets" / "conditions.json").read_text()) == [
        {"name": "labels", "kind": "categorical", "values": list("abcdefghij")}]
    assert '"latent_dim": 4' in (version / "assets" / "config.json").read_text()
    assert [p.name for p in export_root.iterdir()] == ["1"]  # no temporary leftovers


def test_loads_in_a_process_that_never_imports_keras_cvae(export_root, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(export_root / "1")!r})
        images = loaded.signatures["serving_default"](labels=tf.constant([0, 3, 9], tf.int32))["images"].numpy()
        assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32, images.shape
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert not [m for m in sys.modules if m.startswith("keras_cvae")]
        print("ok")
    """)
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_signatures_match_the_in_memory_model(model, export_root):
    loaded = tf.saved_model.load(str(export_root / "1"))
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 4)).astype("float32")
    labels = np.array([0, 1, 2, 8, 9], "int32")
    decoded = loaded.signatures["decode"](z=tf.constant(z), labels=tf.constant(labels))["images"]
    np.testing.assert_allclose(decoded.numpy(), model.decode(z, labels).numpy(), atol=1e-5)

    images = rng.random((5, 28, 28, 1)).astype("float32")
    encoded = loaded.signatures["encode"](images=tf.constant(images), labels=tf.constant(labels))
    assert encoded["z_mean"].shape == (5, 4) and encoded["z_log_var"].shape == (5, 4)
    np.testing.assert_allclose(encoded["z_mean"].numpy(), model.encode(images, labels)[0].numpy(), atol=1e-5)
    reconstructed = loaded.signatures["reconstruct"](images=tf.constant(images), labels=tf.constant(labels))
    assert reconstructed["images"].shape == (5, 28, 28, 1)
    log_lik = loaded.signatures["log_likelihood"](images=tf.constant(images), labels=tf.constant(labels), z=tf.constant(z))
    np.testing.assert_allclose(
        log_lik["log_likelihood"].numpy(), model.log_likelihood(images, labels, z).numpy(), rtol=1e-5
    )
    eps = rng.standard_normal((3, 5, 4)).astype("float32")
    weights = loaded.signatures["log_importance_weights"](images=tf.constant(images), eps=tf.constant(eps),
                                                          labels=tf.constant(labels))["log_weights"]
    assert weights.shape == (3, 5)
    np.testing.assert_allclose(weights.numpy(), model.log_importance_weights(images, labels, eps).numpy(), rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="eps must have shape K×N×4, N images"):
        loaded.signatures["log_importance_weights"](images=tf.constant(images), eps=tf.constant(eps[:, :2]),
                                                    labels=tf.constant(labels))


def test_saved_model_cli_lists_signatures_and_dtypes(model, export_root):
    cli = REPO_ROOT / ".venv" / "bin" / "saved_model_cli"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(
        [*command, "show", "--all", "--dir", str(export_root / "1")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    names = set(ClassesTask().endpoints(model))
    assert names == {"serving_default", "decode", "encode", "reconstruct", "log_likelihood", "log_importance_weights",
                     "sample_latent", "elbo_terms", "kl_per_dimension"}
    for name in names:
        assert f"signature_def['{name}']" in out
    serving = out.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['labels']" in serving and "DT_INT32" in serving and "shape: (-1)" in serving
    assert "outputs['images']" in serving and "DT_FLOAT" in serving and "shape: (-1, 28, 28, 1)" in serving
    encode = out.split("signature_def['encode']")[1].split("signature_def[")[0]
    assert "inputs['images']" in encode and "shape: (-1, 28, 28, 1)" in encode
    assert "outputs['z_mean']" in encode and "outputs['z_log_var']" in encode


def test_graph_has_no_python_function_ops(export_root):
    loaded = tf.saved_model.load(str(export_root / "1"))
    ops = set()
    for signature in loaded.signatures.values():
        graph_def = signature.graph.as_graph_def()
        ops |= {node.op for node in graph_def.node}
        ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    assert "MatMul" in ops  # the walk really saw the model's graph
    assert not ops & {"PyFunc", "EagerPyFunc", "NumpyFunction", "PyFuncStateless"}


def test_tfsmlayer_wraps_it_in_a_new_keras_model(export_root):
    layer = keras.layers.TFSMLayer(str(export_root / "1"), call_endpoint="serving_default")
    labels = keras.Input((), dtype="int32", name="labels")
    wrapper = keras.Model(labels, layer(labels))
    out = wrapper(np.array([1, 2], "int32"))
    assert out["images"].shape == (2, 28, 28, 1)


@pytest.mark.parametrize("labels", [[0, 10], [-1]])
def test_out_of_range_labels_fail_with_the_valid_range(export_root, labels):
    loaded = tf.saved_model.load(str(export_root / "1"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be integers in \[0, 10\)"):
        loaded.signatures["serving_default"](labels=tf.constant(labels, tf.int32))


def test_wrong_shapes_and_batch_mismatch_fail_clearly(export_root):
    loaded = tf.saved_model.load(str(export_root / "1"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must have shape N×28×28×1"):
        loaded.signatures["encode"](images=tf.zeros([2, 27, 28, 1]), labels=tf.constant([0, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images and labels must have the same batch size"):
        loaded.signatures["reconstruct"](images=tf.zeros([2, 28, 28, 1]), labels=tf.constant([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z must have shape N×4"):
        loaded.signatures["decode"](z=tf.zeros([2, 3]), labels=tf.constant([0, 1]))


def _digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_second_export_is_version_2_and_leaves_1_untouched(model, tmp_path):
    first = export_saved_model(model, tmp_path)
    before = _digest(first)
    second = export_saved_model(model, tmp_path)
    assert (first.name, second.name) == ("1", "2") and next_version(tmp_path) == 3
    assert _digest(first) == before
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(model, tmp_path, version=1)


def test_concurrent_exports_to_one_root_take_the_next_free_version(model, tmp_path, monkeypatch):
    """Two exports that both computed version 1 do not collide: the second lands as version 2
    instead of failing after doing all the work."""
    first = export_saved_model(model, tmp_path)
    before = _digest(first)
    monkeypatch.setattr(export_module, "next_version", lambda root: 1)  # computed before 1 appeared
    second = export_module.export_saved_model(model, tmp_path)
    assert (first.name, second.name) == ("1", "2")
    assert _digest(first) == before
    assert (second / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # no staging dir left behind


def test_export_is_readable_by_other_users(model, tmp_path):
    """A TF Serving process running as another user can read an export: with umask 022 its
    version dirs are 0755 and its files 0644 (not mkdtemp's 0700)."""
    old = os.umask(0o022)
    try:
        version = export_saved_model(model, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    for path in version.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_interrupted_export_leaves_no_partial_version(model, tmp_path, monkeypatch):
    real_build = export_module.build_archive

    def build_sabotaged(model):
        archive = real_build(model)
        real_write_out = archive.write_out

        def write_then_die(path, **kwargs):
            real_write_out(path, **kwargs)
            raise KeyboardInterrupt  # as if interrupted after the SavedModel was written

        archive.write_out = write_then_die
        return archive

    monkeypatch.setattr(export_module, "build_archive", build_sabotaged)
    with pytest.raises(KeyboardInterrupt):
        export_module.export_saved_model(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_inference_wrapper(model, export_root):
    generator = load_client(export_root)  # an export root resolves to its newest version
    assert generator.latent_dim == 4 and generator.class_names == list("abcdefghij")
    images = generator.generate([2, 5], num=3, seed=7)
    assert images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(images, generator.generate([2, 5], num=3, seed=7))
    assert generator.generate(4, num=2).shape == (2, 28, 28, 1)  # in-graph noise
    z_mean, z_log_var = generator.encode(images, np.repeat([2, 5], 3))
    assert z_mean.shape == (6, 4)
    assert generator.reconstruct(images[0], 2).shape == (1, 28, 28, 1)
    with pytest.raises(ValueError, match="labels: unknown category 10; choose one of: a, b"):
        generator.generate([10])
    np.testing.assert_array_equal(generator.generate({"labels": ["c", "f"]}, num=3, seed=7), images)  # by name
    with pytest.raises(ValueError, match="images must be N×28×28×1"):
        generator.encode(np.zeros((2, 14, 14, 1)), [0, 1])


def test_restyle_decodes_each_z_under_every_label(model, export_root):
    images = np.random.default_rng(2).random((3, 28, 28, 1)).astype("float32")
    labels = np.array([4, 0, 7], "int32")
    rows = restyle(load_client(export_root), images, labels)
    assert rows.shape == (3, 10, 28, 28, 1)
    z_mean, _ = model.encode(images, labels)
    for i in range(3):
        expected = model.decode(np.repeat(z_mean[i : i + 1], 10, axis=0), np.arange(10)).numpy()
        np.testing.assert_allclose(rows[i], expected, atol=1e-5)


def test_generate_cli_style_from(export_root, tmp_path, tiny_arrays):
    data_dir = write_idx_folder(tmp_path / "mnist", *tiny_arrays)
    out = tmp_path / "style.png"
    result = run_cli("-m", "keras_cvae", "generate", "--model", str(export_root / "1"), "--style-from", "3",
                     "--data-dir", str(data_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli("-m", "keras_cvae", "generate", "--model", str(export_root / "1"), "--style-from", "20",
                  "--data-dir", str(data_dir), "--out", str(out))
    assert bad.returncode == 2 and "--style-from must be in [0, 20), got 20" in bad.stderr


def test_generate_cli_writes_a_grid(export_root, tmp_path):
    out = tmp_path / "grid.png"
    result = run_cli("-m", "keras_cvae", "generate", "--model", str(export_root / "1"),
                     "--label", "all", "--num", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli("-m", "keras_cvae", "generate", "--model", str(export_root), "--label", "11", "--out", str(out))
    assert bad.returncode == 2
    assert project_lines(bad.stderr) == [
        "keras_cvae generate: error: --condition: labels: unknown category '11'; choose one of: a, b, c, d, e, f, g, h, i, j"]
    missing = run_cli("-m", "keras_cvae", "generate", "--model", str(tmp_path / "nope"), "--out", str(out))
    assert missing.returncode == 2 and "is neither a SavedModel version dir" in missing.stderr


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    from keras_cvae.export import export_saved_model
    from keras_cvae.models.cvae import CVAE

    path = export_saved_model(CVAE(latent_dim=2, hidden_units=(8,)), tmp_path_factory.mktemp("export"))
    return tf.saved_model.load(str(path)).signatures["serving_default"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=8))
def test_serving_labels_are_checked_in_the_graph(serving, labels):
    try:
        images = serving(labels=tf.constant(labels, tf.int32, shape=[len(labels)]))["images"].numpy()
    except tf.errors.InvalidArgumentError as err:
        assert any(not 0 <= v < 10 for v in labels)
        assert "labels must be integers in [0, 10)" in str(err)
        return
    assert all(0 <= v < 10 for v in labels)
    assert images.shape == (len(labels), 28, 28, 1)


def test_client_reads_an_export_written_before_conditions(export_root, tmp_path):
    """Exports of earlier versions name their classes in the model config, without conditions."""
    old = tmp_path / "1"
    shutil.copytree(export_root / "1", old)
    config_path = old / "assets" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"].pop("conditions")
    config["model"].update(num_classes=10, class_names=list("abcdefghij"))
    config_path.write_text(json.dumps(config))
    client = load_client(old)
    assert client.class_names == list("abcdefghij")
    np.testing.assert_array_equal(client.generate(["b", "j"], seed=3), load_client(export_root).generate([1, 9], seed=3))
