// PortraitTalk's frontend extension.
// - Audio Encode: shows the audio's duration and the frame count it gives, after each run.
// - Video Combine: the node's video preview (ComfyUI's own player, fed by ui.PreviewVideo) plays with sound.
// - Load Identity Refs: the aligned face crops appear as the node's image preview (ui.PreviewImage).
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

// A read-only multiline STRING widget (a textarea, as the "Show Text" nodes use): the frontend draws a
// disabled "text" widget as its name alone, so the line would never be seen.
function infoWidget(node) {
  let widget = node.widgets?.find((w) => w.name === "portraittalk_info");
  if (!widget) {
    widget = ComfyWidgets.STRING(node, "portraittalk_info", ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.classList.add("portraittalk-info");
    widget.inputEl.style.opacity = 0.75;
    widget.serialize = false;                 // not saved in the workflow
    widget.options.serialize = false;         // nor sent with the prompt
    widget.options.hideOnZoom = false;        // shown at any zoom, as the frontend's own previews are
    widget.computeLayoutSize = () => ({ minHeight: 40, maxHeight: 64, minWidth: 0 });
  }
  return widget;
}

// Grows the node to fit a widget added after it was laid out, never shrinking what the user sized.
function fitNode(node) {
  requestAnimationFrame(() => {
    const size = node.computeSize();
    node.setSize([Math.max(size[0], node.size[0]), Math.max(size[1], node.size[1])]);
    node.setDirtyCanvas(true, true);
  });
}

app.registerExtension({
  name: "PortraitTalk.NodeInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "PortraitTalkAudioEncode") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = message?.text?.join?.(" ") ?? "";
        const fresh = !this.widgets?.some((w) => w.name === "portraittalk_info");
        infoWidget(this).value = text;            // e.g. "6.42 s of audio -> 161 frames at 25 fps"
        if (fresh) fitNode(this);
        this.setDirtyCanvas(true, true);
      };
    }
    if (nodeData.name === "PortraitTalkVideoCombine") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        // ComfyUI's preview player starts muted; a talking-face video is about its sound.
        requestAnimationFrame(() => {
          for (const video of document.querySelectorAll("video")) {
            if (video.src?.includes("PortraitTalk")) video.muted = false;
          }
        });
      };
    }
  },
});
