"""The public API is exactly DESIGN.md's, and the errors form its tree."""

import pickle

import kerasave as ks

DESIGN_NAMES = {
    "reference_model", "reference_data", "save_weights", "load_weights", "to_json",
    "model_from_json", "to_yaml", "model_from_yaml", "save_config", "load_config",
    "save_model", "load_model", "verify", "inspect", "CheckpointManager", "Report", "Check",
    "KerasaveError", "UnknownFormatError", "ArtifactNotFoundError", "CorruptArtifactError",
    "ArchitectureMismatchError", "UnsafeArtifactError", "NotSerializableError",
    "RoundTripError",
}


# Reading without a model (DESIGN.md, third round): ``open`` gives an ``Artifact``,
# public as ``Inspection`` and ``Report`` are: what a public call returns is a type
# users may name (annotations, isinstance), and its repr and docs say kerasave.Artifact.
READING = {"open", "Artifact"}


def test_all_is_the_public_api():
    assert set(ks.__all__) == DESIGN_NAMES | READING | {"__version__", "Inspection", "Variable"}
    for name in ks.__all__:
        assert hasattr(ks, name), name


def test_error_tree():
    for name in DESIGN_NAMES:
        obj = getattr(ks, name)
        if isinstance(obj, type) and name.endswith("Error") and name != "KerasaveError":
            assert issubclass(obj, ks.KerasaveError), name
    assert issubclass(ks.UnknownFormatError, ValueError)
    assert issubclass(ks.ArtifactNotFoundError, FileNotFoundError)
    assert issubclass(ks.ArchitectureMismatchError, ValueError)


def test_report_is_frozen_and_readable():
    report = ks.Report("/x/y", "h5", False, (ks.Check("a", True, "fine"),
                                            ks.Check("b", False, "broken")), 10, 0.5)
    text = str(report)
    assert "h5" in text and "/x/y" in text and "fine" in text and "broken" in text
    assert "<table>" in report._repr_html_()
    assert report.failed == (ks.Check("b", False, "broken"),)
    try:
        report.ok = True  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("Report must be frozen")


def test_error_messages_name_the_path():
    err = ks.CorruptArtifactError("bad bytes", path="/tmp/m.h5")
    assert "/tmp/m.h5" in str(err) and err.path == "/tmp/m.h5"


def test_public_names_report_the_package_as_their_module():
    for name in ks.__all__:
        if name != "__version__":
            assert getattr(ks, name).__module__ == "kerasave", name
    from kerasave import _errors

    assert _errors.CorruptArtifactError.__module__ == "kerasave"  # however reached
    error = ks.CorruptArtifactError("damaged", path="p.keras")
    assert pickle.loads(pickle.dumps(error)).args == error.args
