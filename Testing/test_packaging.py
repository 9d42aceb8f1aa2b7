"""Extension packaging: CMake lists every file of the module and covers the carried core, the metadata,
catalog entry, licence, icon, screenshots and requirements agree, and the built layout imports."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import MODULE_DIR, ROOT

CORE_SRC = ROOT / "MMXAICore" / "src"


def cmake_list(text: str, var: str) -> list[str]:
    m = re.search(r"set\(\s*" + var + r"\s+(.*?)\)", text, re.S)
    assert m, f"{var} not set"
    items = [x for x in m.group(1).split() if not x.startswith("#")]
    return [x.replace("${MODULE_NAME}", "MMXAISlicer") for x in items]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def test_module_cmake_lists_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk = files_under(MODULE_DIR)
    py = [f for f in on_disk if f.endswith(".py")]
    assert sorted(scripts) == sorted(py), "every .py file of the module is listed, nothing else"
    demo = [f for f in on_disk if f.startswith("Resources/DemoModel/")]
    other = [f for f in on_disk if f not in py and f != "CMakeLists.txt" and f not in demo]
    assert sorted(resources) == sorted(other), "every resource is listed"
    assert "Resources/DemoModel/*" in text and "GLOB" in text, "the demo checkpoint folder is packaged"
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_carried_core_is_covered_by_the_cmake_globs():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    patterns = re.findall(r"\$\{MMXAI_CORE_SOURCE_DIR\}/(mmxai_core/[^\s)]+)", text)
    assert "mmxai_core/*.py" in patterns
    files = files_under(CORE_SRC / "mmxai_core")
    assert files
    uncovered = [f for f in files if not any(fnmatch.fnmatch("mmxai_core/" + f, p) for p in patterns)]
    assert uncovered == [], f"core files the extension would not carry: {uncovered} (add a pattern in CMake)"
    assert "../MMXAICore/src" in text and "NO_INSTALL_SUBDIR" in text


def test_top_level_cmake_is_a_slicer_extension_and_matches_the_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert values.get(key), key
    assert "not for diagnosis" in values["EXTENSION_DESCRIPTION"].lower()
    for needle in ("project(MMXAI)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "add_subdirectory(MMXAISlicer)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                   "include(${Slicer_EXTENSION_CPACK})"):
        assert needle in text, needle
    for url in values["EXTENSION_SCREENSHOTURLS"].split() + [values["EXTENSION_ICONURL"]]:
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).is_file(), f"{rel} named in the extension metadata is missing"
        assert (ROOT / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    entry = json.loads((ROOT / "MMXAI.json").read_text())
    assert "slicer-extension-catalog-entry-schema-v1.0.2" in entry["$schema"]
    assert entry["category"] == values["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == values["EXTENSION_DEPENDS"].split()
    assert entry["scm_url"].startswith("https://") and entry["scm_url"].endswith(".git")
    assert set(entry) <= {"$schema", "build_dependencies", "category", "scm_revision", "scm_url", "tier"}
    lic = (ROOT / "LICENSE").read_text()
    assert "Apache License" in lic and "Version 2.0" in lic and "END OF TERMS AND CONDITIONS" in lic
    icon = MODULE_DIR / "Resources" / "Icons" / "MMXAISlicer.png"
    assert icon.read_bytes()[:4] == b"\x89PNG"


def test_requirements_follow_the_core_without_torch_simpleitk_or_shap():
    from MMXAISlicerLib.deps import NEVER_INSTALL, load_requirements, missing_requirements, requirement_name

    reqs = load_requirements()
    assert reqs and all("==" not in r and "<" not in r for r in reqs), "lower bounds only, never pins"
    names = {requirement_name(r) for r in reqs}
    assert not names & set(NEVER_INSTALL)
    pyproject = (ROOT / "MMXAICore" / "pyproject.toml").read_text()
    deps_block = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    core = {requirement_name(d) for d in re.findall(r'"([^"]+)"', deps_block)}
    assert names == core - {"torch", "torchvision", "simpleitk"}, \
        "requirements.txt must list the core's dependencies except torch/torchvision (PyTorchUtils) and SimpleITK"
    versions = {"numpy": "2.0.0", "pydicom": "2.3"}
    assert missing_requirements(["numpy>=1.24", "pydicom>=2.4", "nothing-here>=1"], versions.get) == \
        ["pydicom>=2.4", "nothing-here>=1"]


def test_module_metadata_with_stubbed_slicer_app(monkeypatch):
    """MMXAISlicer.py imports and carries its metadata; its logic class works on a slicer-core scene.
    (qt and ScriptedLoadableModule exist only in the Slicer app: stubbed here.)"""
    import slicer

    sl = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, parent=None):
            self.parent = parent

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(sl, name, type(name, (Base,), {}))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", sl)
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    import importlib.util

    spec = importlib.util.spec_from_file_location("MMXAISlicer_stubbed", MODULE_DIR / "MMXAISlicer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    parent = types.SimpleNamespace()
    mod.MMXAISlicer(parent)
    assert parent.title == "MMXAI" and parent.categories == ["Machine Learning"] and parent.contributors
    assert "research use only - not for diagnosis" in parent.helpText.lower()
    ack = parent.acknowledgementText
    assert "Dash et al." in ack and "Front. Artif. Intell. 9:1767612" in ack and "2026" in ack
    scene = slicer.vtkMRMLScene()
    logic = mod.MMXAISlicerLogic(scene)
    assert logic.scene is scene and hasattr(logic, "run") and logic.list_volumes() == []
    assert hasattr(mod, "MMXAISlicerTest") and hasattr(mod.MMXAISlicerTest, "runTest")


STUB_SLICER_CONFIG = r"""
# Stand-in for SlicerConfig.cmake: the macros copy files exactly as Slicer's do (destination = SOURCE_DIR-relative
# path under DESTINATION_DIR), so the extension's lists and globs are checked without a Slicer build.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.x/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.x/qt-scripted-modules)
set(BUILD_TESTING OFF)
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(CTKPY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT CTKPY_SOURCE_DIR)
    set(CTKPY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  foreach(f ${CTKPY_SCRIPTS} ${CTKPY_RESOURCES})
    if(NOT EXISTS ${CTKPY_SOURCE_DIR}/${f})
      message(FATAL_ERROR "listed file does not exist: ${f}")
    endif()
    get_filename_component(d ${CTKPY_DESTINATION_DIR}/${f} DIRECTORY)
    file(COPY ${CTKPY_SOURCE_DIR}/${f} DESTINATION ${d})
  endforeach()
endmacro()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  ctkMacroCompilePythonScript(TARGET_NAME ${MY_NAME} SCRIPTS ${MY_SCRIPTS} RESOURCES ${MY_RESOURCES}
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR} INSTALL_DIR x NO_INSTALL_SUBDIR)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_configured_extension_layout_imports(tmp_path):
    stub = tmp_path / "stub-slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER_CONFIG)
    (stub / "empty.cmake").write_text("")
    build = tmp_path / "build"
    res = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    moddir = build / "lib" / "Slicer-5.x" / "qt-scripted-modules"
    for rel in ("MMXAISlicer.py", "MMXAISlicerLib/logic.py", "Resources/requirements.txt",
                "Resources/Icons/MMXAISlicer.png", "mmxai_core/__init__.py", "mmxai_core/worker/protocol.py"):
        assert (moddir / rel).is_file(), rel
    assert files_under(moddir / "mmxai_core") == files_under(CORE_SRC / "mmxai_core")
    demo = MODULE_DIR / "Resources" / "DemoModel"
    if demo.is_dir():
        assert files_under(moddir / "Resources" / "DemoModel") == files_under(demo)
    # the built layout finds the carried core next to the module (not MMXAICore/src)
    code = ("import sys; sys.path.insert(0, %r); from MMXAISlicerLib import core; print(core.core_dir()); "
            "core.ensure_core_importable(); import mmxai_core.worker.protocol as p; print(p.__file__); "
            "env = core.worker_environment({}); print(env['PYTHONPATH'])") % str(moddir)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert Path(lines[0]) == moddir and Path(lines[1]).is_relative_to(moddir) and Path(lines[2]) == moddir
