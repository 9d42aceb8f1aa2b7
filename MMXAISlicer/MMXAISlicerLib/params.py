"""Panel values kept in a parameter node (``vtkMRMLScriptedModuleNode``), so a saved scene restores them.

The node is the scene's singleton for the module, found or made the way Slicer's
``ScriptedLoadableModuleLogic.getParameterNode()`` does (singleton tag = module name, attribute
``ModuleName``), so the panel and scripts share it. The input volume is a node reference (it follows node ID
changes when a scene is imported); everything else is a string parameter.
"""

from __future__ import annotations

MODULE_NAME = "MMXAISlicer"


def get_parameter_node(scene, module_name: str = MODULE_NAME):
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is None:
        import slicer

        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetName(scene.GenerateUniqueName(module_name))
        node.SetSingletonTag(module_name)
        node.SetAttribute("ModuleName", module_name)
        node = scene.AddNode(node)
    return node


class ParameterStore:
    """String parameters and node references on one parameter node."""

    def __init__(self, node):
        self.node = node

    def get(self, key: str, default: str = "") -> str:
        value = self.node.GetParameter(key)
        return default if value is None or value == "" else str(value)

    def set(self, key: str, value) -> None:
        text = "" if value is None else str(value)
        if self.node.GetParameter(key) != text:
            self.node.SetParameter(key, text)

    def get_node_id(self, role: str) -> str | None:
        return self.node.GetNodeReferenceID(role) or None

    def set_node_id(self, role: str, node_id: str | None) -> None:
        if (self.node.GetNodeReferenceID(role) or None) != (node_id or None):
            self.node.SetNodeReferenceID(role, node_id)


class MemoryStore:
    """The same interface without a scene (a presenter without a parameter node)."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self.refs: dict[str, str | None] = {}

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key) or default

    def set(self, key: str, value) -> None:
        self.values[key] = "" if value is None else str(value)

    def get_node_id(self, role: str) -> str | None:
        return self.refs.get(role)

    def set_node_id(self, role: str, node_id: str | None) -> None:
        self.refs[role] = node_id
