import kerasave as ks


def test_inspect_every_format(trained, tmp_path):
    cases = [("save_weights", "w/ckpt", "checkpoint", True, 14),
             ("save_weights", "w.weights.h5", "h5", True, 14),
             ("save_config", "c.json", "json", False, 0),
             ("save_config", "c.yaml", "yaml", False, 0),
             ("save_model", "m.keras", "keras", True, 14),
             ("save_model", "m.h5", "h5", True, 14),
             ("save_model", "serving", "savedmodel", False, None)]
    for call, rel, fmt, has_opt, n_vars in cases:
        report = getattr(ks, call)(trained, tmp_path / rel)
        info = ks.inspect(tmp_path / rel)
        assert info.format == fmt, rel
        assert info.has_optimizer == has_opt, rel
        assert info.bytes == report.bytes and info.files, rel
        if n_vars is not None:
            assert len(info.variables) == n_vars, (rel, info.variables)
        for var in info.variables:
            assert isinstance(var.shape, tuple) and all(isinstance(d, int) for d in var.shape)
        assert info.versions, rel
        assert fmt in str(info) and "<table>" in info._repr_html_()


def test_inspect_checkpoint_names_and_shapes(trained, tmp_path):
    ks.save_weights(trained, tmp_path / "ckpt")
    info = ks.inspect(tmp_path / "ckpt")
    shapes = {v.name: (v.shape, v.dtype) for v in info.variables}
    assert shapes[trained.layers[0].kernel.path] == ((32, 64), "float32")
    assert shapes[trained.optimizer.iterations.path] == ((), "int64")
    assert info.versions["kerasave"] == ks.__version__


def test_inspect_keras_archive_adds_the_manifests_versions(trained, tmp_path):
    import json

    import keras
    import tensorflow as tf

    ks.save_model(trained, tmp_path / "m.keras")
    info = ks.inspect(tmp_path / "m.keras")
    assert info.versions == {"keras": keras.__version__, "kerasave": ks.__version__,
                             "tensorflow": tf.__version__}
    # What the archive says of itself wins over the manifest.
    manifest = tmp_path / "m.keras.kerasave.json"
    data = json.loads(manifest.read_text())
    data["versions"]["keras"] = "0.0-manifest"
    manifest.write_text(json.dumps(data))
    assert ks.inspect(tmp_path / "m.keras").versions["keras"] == keras.__version__
    # A plain Keras archive names only Keras.
    trained.save(tmp_path / "plain.keras")
    assert ks.inspect(tmp_path / "plain.keras").versions == {"keras": keras.__version__}


def test_verify_report_for_good_and_bad(trained, tmp_path):
    ks.save_model(trained, tmp_path / "m.keras")
    good = ks.verify(trained, tmp_path / "m.keras")
    assert good.ok and good.format == "keras"
    assert {c.name for c in good.checks} >= {"config", "model variables", "optimizer variables",
                                             "compile settings", "predictions"}
    bad = ks.verify(ks.reference_model(seed=11), tmp_path / "m.keras")
    assert not bad.ok and "model variables" in {c.name for c in bad.failed}
