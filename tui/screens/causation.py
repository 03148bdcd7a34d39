"""``CausationModal``: the current entry's correlation chain as a tree of causes and effects."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Tree
from textual.widgets.tree import TreeNode

from mmaplog import Reader
from tui.formatting import format_ts
from tui.queries import CauseNode, build_causation_tree

__all__ = ["CausationModal"]


class CausationModal(ModalScreen[int | None]):
    """Entries of one correlation chain, each under the entry that caused it; Enter jumps."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "cancel", "Close"),
    ]

    DEFAULT_CSS = """
    CausationModal { align: center middle; }
    CausationModal > Vertical {
        width: 90%; height: 80%; padding: 0 1;
        border: thick $primary; background: $surface;
    }
    CausationModal Tree { height: 1fr; }
    """

    class Loaded(Message, bubble=False):
        def __init__(self, roots: list[CauseNode], chain_length: int) -> None:
            super().__init__()
            self.roots = roots
            self.chain_length = chain_length

    def __init__(self, run_dir: Path, correlation_id: uuid.UUID, focus_seq: int) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.correlation_id = correlation_id
        self.focus_seq = focus_seq
        self.chain_length: int | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Causation tree of correlation {self.correlation_id}", id="cause-title")
            yield Tree[int](f"chain {self.correlation_id.hex[:8]} (loading…)", id="cause-tree")

    def on_mount(self) -> None:
        self.query_one(Tree).focus()
        self._load()

    @work(thread=True, exclusive=True, group="causation", exit_on_error=False)
    def _load(self) -> None:
        with Reader(self.run_dir) as reader:
            roots, length = build_causation_tree(reader, self.correlation_id)
        self.post_message(self.Loaded(roots, length))

    def on_causation_modal_loaded(self, message: Loaded) -> None:
        self.chain_length = message.chain_length
        tree: Tree[int] = self.query_one("#cause-tree", Tree)
        tree.clear()
        tree.root.set_label(f"chain {self.correlation_id.hex[:8]}: {message.chain_length} entries")
        focus: list[TreeNode[int]] = []
        for root in message.roots:
            self._add(tree.root, root, focus)
        tree.root.expand_all()
        if focus:
            # The tree lays out its lines on the next refresh; the node has no line before.
            self.call_after_refresh(tree.move_cursor, focus[0])

    def _add(self, parent: TreeNode[int], node: CauseNode, focus: list[TreeNode[int]]) -> None:
        label = Text.assemble(
            (f"#{node.seq} ", "bold"),
            (node.payload_type, "yellow"),
            f"  {node.topic}  ",
            (format_ts(node.ts_init)[11:], "dim"),
        )
        if node.seq == self.focus_seq:
            label.stylize("reverse")
        child = parent.add(label, data=node.seq, expand=True, allow_expand=bool(node.children))
        if node.seq == self.focus_seq:
            focus.append(child)
        for grandchild in node.children:
            self._add(child, grandchild, focus)

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[int]) -> None:
        if event.node.data is not None:
            self.dismiss(event.node.data)

    def action_cancel(self) -> None:
        self.dismiss(None)
