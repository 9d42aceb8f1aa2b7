"""MRML node builders for one case's outputs (no Qt; the scene is passed in).

Every output node carries two attributes: ``MMXAI.SourceVolumeID`` (the input volume's node ID) and
``MMXAI.Role``. A re-run on the same input finds its nodes by these and updates them instead of adding new
ones; attributes are saved with the scene, so this also holds after a scene is saved and reloaded.
"""

from __future__ import annotations

from typing import Any, Iterable

import vtk

ATTR_SOURCE = "MMXAI.SourceVolumeID"
ATTR_ROLE = "MMXAI.Role"

ROLE_LABEL = "heatmap_label"
ROLE_HEATMAP = "heatmap"
ROLE_COLORS = "heatmap_colors"
ROLE_TABLE = "shapley_table"
ROLE_CHART = "shapley_chart"
ROLE_SERIES_POS = "shapley_series_positive"
ROLE_SERIES_NEG = "shapley_series_negative"
ROLE_TEXT = "result_text"
ROLES = (ROLE_LABEL, ROLE_HEATMAP, ROLE_COLORS, ROLE_TABLE, ROLE_CHART, ROLE_SERIES_POS, ROLE_SERIES_NEG,
         ROLE_TEXT)

COLOR_POSITIVE = (0.80, 0.15, 0.15)  # raises the probability: red
COLOR_NEGATIVE = (0.15, 0.35, 0.80)  # lowers the probability: blue
CONTINUOUS_COLOR_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileViridis.txt",
                        "vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeRainbow")

TABLE_COLUMNS = ("#", "Field", "Value entered", "Contribution", "Raises", "Lowers", "Label")


def _slicer():
    import slicer

    return slicer


# ------------------------------------------------------------------------------------ find / make
def find_output(scene, source_id: str, role: str):
    """The output node of ``role`` for the input ``source_id``, or None."""
    for i in range(scene.GetNumberOfNodes()):
        n = scene.GetNthNode(i)
        if n.GetAttribute(ATTR_SOURCE) == source_id and n.GetAttribute(ATTR_ROLE) == role:
            return n
    return None


def find_outputs(scene, source_id: str) -> dict[str, Any]:
    return {r: n for r in ROLES if (n := find_output(scene, source_id, r)) is not None}


def get_or_create(scene, class_name: str, source_id: str, role: str, name: str, created: list):
    """Find the output node or add a new one (appended to ``created`` so a failure can remove it)."""
    node = find_output(scene, source_id, role)
    if node is not None and node.IsA(class_name):
        node.SetName(name)
        return node
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetAttribute(ATTR_SOURCE, source_id)
    node.SetAttribute(ATTR_ROLE, role)
    created.append(node)
    return node


# --------------------------------------------------------------------------------------- geometry
def ijk_to_ras(node) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m


def matrix_list(m: vtk.vtkMatrix4x4) -> list[list[float]]:
    return [[m.GetElement(i, j) for j in range(4)] for i in range(4)]


def read_volume_file(path: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    """Read a volume file into a node that is in no scene, through a volume archetype storage node
    (keeps the file's oblique geometry). Returns the node; raises OSError when it cannot be read."""
    slicer = _slicer()
    node = getattr(slicer, class_name)()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(f"cannot read {path}")
    return node


def write_volume_file(node, path: str) -> None:
    """Write ``node``'s voxels and IJK-to-RAS to ``path`` (NRRD) with a storage node that is not attached to
    the node or the scene (so the node itself is left exactly as it was)."""
    slicer = _slicer()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(node):
        raise OSError(f"cannot write {path}")


def same_grid(a, b, tol_mm: float = 1e-3) -> tuple[bool, str]:
    """Whether nodes ``a`` and ``b`` have the same dimensions and IJK-to-RAS (within ``tol_mm`` per entry,
    scaled to the voxel size); a reason when not."""
    da, db = a.GetImageData().GetDimensions(), b.GetImageData().GetDimensions()
    if tuple(da) != tuple(db):
        return False, f"dimensions {tuple(db)} instead of {tuple(da)}"
    ma, mb = matrix_list(ijk_to_ras(a)), matrix_list(ijk_to_ras(b))
    worst = max(abs(ma[i][j] - mb[i][j]) for i in range(3) for j in range(4))
    if worst > tol_mm:
        return False, f"IJK-to-RAS differs by up to {worst:.3g} mm"
    return True, ""


def set_volume_from(target, source_image: vtk.vtkImageData, reference) -> None:
    """Give ``target`` a copy of ``source_image`` and exactly ``reference``'s IJK-to-RAS and parent transform."""
    img = vtk.vtkImageData()
    img.DeepCopy(source_image)
    img.SetOrigin(0.0, 0.0, 0.0)
    img.SetSpacing(1.0, 1.0, 1.0)
    target.SetAndObserveImageData(img)
    target.SetIJKToRASMatrix(ijk_to_ras(reference))
    target.SetAndObserveTransformNodeID(reference.GetTransformNodeID())


# ---------------------------------------------------------------------------------------- colours
def update_color_table(color_node, bins, display_threshold: float | None = None) -> None:
    """User colour table from the bins: one entry per label, label 0 transparent; bins entirely below
    ``display_threshold`` are made transparent too."""
    color_node.SetTypeToUser()
    color_node.SetNumberOfColors(bins.n_labels)
    for k in range(bins.n_labels):
        r, g, b, a = bins.rgba[k]
        if k == 0:
            a = 0.0
        elif display_threshold is not None and k < len(bins.edges) and bins.edges[k] <= display_threshold + 1e-9:
            a = 0.0
        color_node.SetColor(k, bins.names[k] if k < len(bins.names) else f"bin {k}", r, g, b, a)


def preferred_continuous_color_id(scene) -> str | None:
    for cid in CONTINUOUS_COLOR_IDS:
        if scene.GetNodeByID(cid) is not None:
            return cid
    return None


def configure_continuous_display(node, scene, threshold: float) -> None:
    node.CreateDefaultDisplayNodes()
    d = node.GetDisplayNode()
    if d is None:
        return
    cid = preferred_continuous_color_id(scene)
    if cid:
        d.SetAndObserveColorNodeID(cid)
    d.SetAutoWindowLevel(False)
    d.SetWindowLevelMinMax(0.0, 1.0)
    d.SetAutoThreshold(False)
    d.SetThreshold(float(threshold), 1.0)
    d.SetApplyThreshold(True)


def configure_label_display(node, color_node) -> None:
    node.CreateDefaultDisplayNodes()
    d = node.GetDisplayNode()
    if d is not None:
        d.SetAndObserveColorNodeID(color_node.GetID())


# ------------------------------------------------------------------------------------ table/chart
def update_table(table_node, rows, explained: str) -> None:
    """(field, value entered, contribution) table, sorted by contribution (largest first), unknown last;
    ``Raises`` / ``Lowers`` split the contribution by sign for the two bar series."""
    known = sorted((r for r in rows if not r.unknown), key=lambda r: -r.value)
    ordered = known + [r for r in rows if r.unknown]
    arrays = {}
    for name in TABLE_COLUMNS:
        arr = vtk.vtkStringArray() if name in ("Field", "Value entered", "Label") else vtk.vtkDoubleArray()
        arr.SetName(name)
        arrays[name] = arr
    for i, r in enumerate(ordered, start=1):
        arrays["#"].InsertNextValue(float(i))
        arrays["Field"].InsertNextValue(r.label)
        arrays["Value entered"].InsertNextValue(r.entered)
        arrays["Contribution"].InsertNextValue(float(r.value))
        arrays["Raises"].InsertNextValue(max(0.0, float(r.value)))
        arrays["Lowers"].InsertNextValue(min(0.0, float(r.value)))
        arrays["Label"].InsertNextValue(f"{i}. {r.label} = {r.entered}: {r.value:+.3f}")
    table = vtk.vtkTable()
    for name in TABLE_COLUMNS:
        table.AddColumn(arrays[name])
    table_node.SetAndObserveTable(table)
    table_node.SetColumnDescription("Contribution", f"Shapley value: change in p({explained}) from entering "
                                                    "this field (removed field = unknown)")


def update_chart(chart, series_pos, series_neg, table_node, explained: str, title_suffix: str) -> None:
    slicer = _slicer()
    for series, column, colour, name in (
            (series_pos, "Raises", COLOR_POSITIVE, f"raises p({explained})"),
            (series_neg, "Lowers", COLOR_NEGATIVE, f"lowers p({explained})")):
        series.SetName(name)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("#")
        series.SetYColumnName(column)
        series.SetLabelColumnName("Label")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetColor(*colour)
    chart.RemoveAllPlotSeriesNodeIDs()
    chart.AddAndObservePlotSeriesNodeID(series_pos.GetID())
    chart.AddAndObservePlotSeriesNodeID(series_neg.GetID())
    chart.SetTitle(f"Clinical fields: Shapley values for p({explained}) {title_suffix}")
    chart.SetXAxisTitle("clinical field (# in the table; hover a bar for its name)")
    chart.SetYAxisTitle(f"change in p({explained})")
    chart.SetLegendVisibility(True)


# ------------------------------------------------------------------------------- subject hierarchy
def group_in_subject_hierarchy(scene, source, nodes: Iterable) -> str:
    """Put ``nodes`` in a folder "MMXAI: <input>" under the input's study (its parent in the subject
    hierarchy). Returns a note for the status line ('' when grouped under a study)."""
    slicer = _slicer()
    cls = getattr(slicer, "vtkMRMLSubjectHierarchyNode", None)
    if cls is None:
        return "outputs not grouped: this Slicer has no subject hierarchy"
    sh = cls.GetSubjectHierarchyNode(scene)
    if sh is None:
        return "outputs not grouped: no subject hierarchy in this scene"
    scene_item = sh.GetSceneItemID()
    src_item = sh.GetItemByDataNode(source)
    parent = sh.GetItemParent(src_item) if src_item else scene_item
    note = ""
    if not parent or sh.GetItemLevel(parent) != "Study":
        note = "the input volume is in no study, so the outputs are in a folder beside it"
        parent = parent or scene_item
    folder = 0
    children = vtk.vtkIdList()
    sh.GetItemChildren(parent, children)
    for i in range(children.GetNumberOfIds()):
        c = children.GetId(i)
        if sh.GetItemAttribute(c, ATTR_SOURCE) == source.GetID():
            folder = c
            break
    if not folder:
        folder = sh.CreateFolderItem(parent, f"MMXAI: {source.GetName()}")
        sh.SetItemAttribute(folder, ATTR_SOURCE, source.GetID())
    for n in nodes:
        item = sh.GetItemByDataNode(n)
        if item:
            sh.SetItemParent(item, folder)
        else:
            sh.CreateItem(folder, n)
    return note


def remove_nodes(scene, nodes: Iterable) -> None:
    for n in list(nodes):
        if n is not None and scene.IsNodePresent(n):
            scene.RemoveNode(n)


# --------------------------------------------------------------------------------------- display
def show_in_slice_views(scene, background, label=None, label_opacity: float = 0.5, foreground=None,
                        foreground_opacity: float | None = None) -> None:
    """Set the layers of every slice view (what ``slicer.util.setSliceViewerLayers`` does, through MRML)."""
    comps = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(comps.GetNumberOfItems()):
        c = comps.GetItemAsObject(i)
        if background is not None:
            c.SetBackgroundVolumeID(background.GetID())
        if label is not None:
            c.SetLabelVolumeID(label.GetID())
            c.SetLabelOpacity(float(label_opacity))
        if foreground is not None:
            c.SetForegroundVolumeID(foreground.GetID())
        if foreground_opacity is not None:
            c.SetForegroundOpacity(float(foreground_opacity))


def set_label_opacity(scene, label_node_id: str, opacity: float) -> None:
    comps = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(comps.GetNumberOfItems()):
        c = comps.GetItemAsObject(i)
        if c.GetLabelVolumeID() == label_node_id:
            c.SetLabelOpacity(float(opacity))
