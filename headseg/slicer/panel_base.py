"""What every part of the shared panel (``headseg.slicer.panel``) stands on: the widget state the
parts share, how the panel's texts are translated, the status line, running an action for the user,
installing the Python packages an action needs, and checklists of structures.

``qt`` and ``slicer`` are imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, List

from headseg.errors import HeadSegError

__all__ = ["PanelBase"]


def _(text: str) -> str:
    """Slicer's ``tr``: the shared panel's texts are translated once, in this file's context
    (``slicer.panel_base``), whichever of the panel's modules shows them; looked up at call time so that
    this module imports without Slicer."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


class PanelBase:
    """The base of the shared panel's parts: what they all use.

    The panel (:class:`headseg.slicer.panel.SegmentationPanelMixin`) is composed of its parts and sets
    their shared state up in its ``__init__`` (the run, the reviewed segmentation and its table, the
    timers, the follower) and ``setup`` (``ui``, ``logic``).
    """

    # declared for type checkers only: ScriptedLoadableModuleWidget.__init__ sets moduleName, the panel's
    # setup sets ui and logic, its __init__ the rest
    moduleName: str
    ui: Any
    logic: Any
    _run: Any

    # -- acting for the user -----------------------------------------------------------------------
    def runAction(self, failureText: str, action, *args, **kwargs):
        """Run ``action`` for the user; returns (True, its result) or (False, None) after reporting the failure.

        A HeadSegError is a problem the user can fix: its message becomes the status line as it is. Any
        other exception (a bug, a missing package) becomes ``failureText`` (translated, with ``{error}``),
        and its traceback goes to the Python console -- never a traceback alone.
        """
        try:
            return True, action(*args, **kwargs)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
        except Exception as error:
            message = failureText.format(error=error)
            logging.exception("%s: %s", self.moduleName, message)
            self.setStatus(message, error=True)
        return False, None

    def ensurePythonPackages(self, requirements=None) -> bool:
        """Install what an action needs (default: the segmentation process), only after the user agreed.

        Every panel action that runs HeadSeg code needing a package Slicer lacks calls this first:
        Slicer 5.6 to 5.10 ship numpy, scipy and SimpleITK but not pynrrd (PANEL_REQUIREMENTS)."""
        import slicer

        missing = self.logic.missing_packages(requirements)
        if not missing:
            return True
        question = _(
            "This needs Python packages that are not installed:\n\n{packages}\n\n"
            "Install them now? They are downloaded from the internet; this can take several minutes."
        ).format(packages="\n".join(missing))
        if not slicer.util.confirmOkCancelDisplay(question, _("Install Python packages")):
            self.setStatus(_("Not installed: {packages}. This action needs them.").format(
                packages=", ".join(missing)), error=True)
            return False
        try:
            with slicer.util.WaitCursor():
                if any(requirement.startswith("torch") for requirement in missing):
                    self.installTorch()
                for requirement in missing:
                    if not requirement.startswith("torch"):
                        slicer.util.pip_install(requirement)
        except Exception as error:
            logging.exception("%s: installing packages failed", self.moduleName)
            self.setStatus(_("Installing packages failed: {error}").format(error=error), error=True)
            return False
        still = self.logic.missing_packages(requirements)
        if still:
            self.setStatus(_("Still missing after installation: {packages}. Restart Slicer and try again.")
                           .format(packages=", ".join(still)), error=True)
            return False
        return True

    def installTorch(self):
        """PyTorch comes from the PyTorch extension, which picks the build matching the GPU driver."""
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(
                _("Install the PyTorch extension (Extensions Manager), restart Slicer and try again.")
            ) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        try:
            torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1")
        except TypeError:  # older PyTorchUtils without version arguments
            torch = torchLogic.installTorch(askConfirmation=False)
        if torch is None:
            raise RuntimeError(_("PyTorch was not installed."))

    # -- checklists (reviewed structures; a module's own, e.g. the organs) -------------------------
    @staticmethod
    def fillChecklist(listWidget, entries: Iterable[Any], checked: bool) -> None:
        """Replace a QListWidget's items by checkable (key, name) entries, all ticked or all unticked."""
        import qt

        listWidget.clear()
        for key, name in entries:
            item = qt.QListWidgetItem(name)
            item.setData(qt.Qt.UserRole, key)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
            listWidget.addItem(item)

    @staticmethod
    def checkedItemData(listWidget) -> List[Any]:
        """The keys (UserRole data) of the ticked items of a checklist."""
        import qt

        return [listWidget.item(n).data(qt.Qt.UserRole) for n in range(listWidget.count)
                if listWidget.item(n).checkState() == qt.Qt.Checked]

    # -- the status line ---------------------------------------------------------------------------
    def setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")
