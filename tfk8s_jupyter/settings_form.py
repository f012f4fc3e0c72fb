"""The ``%%tfk8s_train --panel`` form: the cluster shape as fields, a Launch button, then the live panel.

The fields come from one table (:data:`FIELDS`): each row names a job option, its label, its default and
its kind (a choice, a bounded whole number or free text).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import ipywidgets as W

from .job_panel import JobPanel


@dataclass(frozen=True)
class Field:
    """One form field: a dropdown when ``choices`` is set, a number box when ``bounds`` is, else text."""

    name: str
    label: str
    default: str | int
    choices: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None
    placeholder: str | None = None

    def widget(self, value, **common) -> W.Widget:
        """The field's widget showing ``value`` (the default when empty)."""
        if self.bounds is not None:
            low, high = self.bounds
            return W.BoundedIntText(
                value=int(value or self.default), min=low, max=high, description=self.label, **common
            )
        if self.choices:
            return W.Dropdown(
                options=list(self.choices), value=value or self.default, description=self.label, **common
            )
        if self.placeholder is not None:
            common["placeholder"] = self.placeholder
        return W.Text(value=value or self.default, description=self.label, **common)


FIELDS = (
    Field(
        "strategy",
        "strategy",
        "auto",
        choices=("auto", "parameter_server", "multi_worker_mirrored", "mirrored"),
    ),
    Field("ps", "parameter servers", 0, bounds=(0, 64)),
    Field("workers", "workers", 1, bounds=(1, 256)),
    Field("gpus", "GPUs per worker", 0, bounds=(0, 16)),
    Field("backend", "backend", "local", choices=("local", "kubernetes")),
    Field("image", "image", ""),
    Field("namespace", "namespace", "", placeholder="(default)"),
    Field("cpu", "CPU", "", placeholder="e.g. 2 or 500m"),
    Field("memory", "memory", "", placeholder="e.g. 4Gi"),
)
SETTINGS_FIELDS = tuple(f.name for f in FIELDS)


class SettingsPanel(W.VBox):
    """The ``%%tfk8s_train --panel`` form; Launch submits the cell and the form becomes its JobPanel.

    Args:
        defaults: initial values of the fields (from config and the magic's flags).
        on_launch: called with the chosen options (``{"strategy": ..., "ps": ..., ...}``); returns the
            job handle, or raises an error whose message is shown under the form.
        panel_factory: builds the live panel for the returned job (default :class:`JobPanel`).
    """

    def __init__(
        self,
        defaults: Mapping[str, object],
        on_launch: Callable[[dict], object],
        panel_factory: Callable[[object], W.Widget] | None = None,
    ):
        self.on_launch = on_launch
        self.panel_factory = panel_factory or (lambda job: JobPanel(job))
        self.job = None
        self.job_panel: W.Widget | None = None
        self._launching = False
        self._launch_lock = threading.Lock()
        style = {"description_width": "120px"}
        lay = W.Layout(width="360px")
        self.fields: dict[str, W.Widget] = {
            f.name: f.widget(defaults.get(f.name), style=style, layout=lay) for f in FIELDS
        }
        for name, w in self.fields.items():
            w.add_class(f"tfk8s-field-{name}")
        self.launch_button = W.Button(description="Launch", icon="rocket", button_style="primary")
        self.launch_button.add_class("tfk8s-launch-button")
        self.launch_button.on_click(self._on_launch)
        self.message = W.HTML("")
        self.message.add_class("tfk8s-error")
        title = W.HTML("<b>Distributed training</b> — choose the cluster shape, then Launch")
        super().__init__([title, *self.fields.values(), W.HBox([self.launch_button]), self.message])
        self.add_class("tfk8s-settings-panel")
        self.layout = W.Layout(border="1px solid #ddd", padding="6px")

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        data["text/plain"] = f"tfk8s settings form ({opts})"
        return data

    def options(self) -> dict:
        """The form's values as job options (empty text fields left out)."""
        out: dict[str, object] = {}
        for name, w in self.fields.items():
            value = w.value
            if isinstance(value, str):
                value = value.strip()
                if not value:
                    continue
            out[name] = value
        return out

    def _on_launch(self, _button=None) -> None:
        # A double click sends two click messages before the browser sees the button disabled: the
        # second one finds the launch under way (or done) and submits nothing.
        with self._launch_lock:
            if self._launching or self.job is not None:
                return
            self._launching = True
        self.launch_button.disabled = True
        self.message.value = "<i>submitting…</i>"
        try:
            job = self.on_launch(self.options())
        except Exception as e:
            self.message.value = (
                f"<span style='color:#dc3545'>{html.escape(type(e).__name__)}: {html.escape(str(e))}</span>"
            )
            self.launch_button.disabled = False
            self._launching = False
            return
        self._launching = False
        self.job = job
        self.job_panel = self.panel_factory(job)
        self.remove_class("tfk8s-settings-panel")
        self.add_class("tfk8s-launched")
        self.layout.border = ""
        self.layout.padding = "0"
        self.children = [self.job_panel]
