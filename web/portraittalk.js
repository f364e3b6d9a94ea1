// PortraitTalk's frontend extension.
// - Audio Encode: shows the audio's duration and the frame count it gives, after each run.
// - Video Combine: the node's video preview (ComfyUI's own player, fed by ui.PreviewVideo) plays with sound.
// - Load Identity Refs: the aligned face crops appear as the node's image preview (ui.PreviewImage).
import { app } from "../../scripts/app.js";

function infoWidget(node) {
  let widget = node.widgets?.find((w) => w.name === "portraittalk_info");
  if (!widget) {
    widget = node.addWidget("text", "portraittalk_info", "", () => {}, { serialize: false });
    widget.disabled = true;
    widget.serialize = false;
  }
  return widget;
}

app.registerExtension({
  name: "PortraitTalk.NodeInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "PortraitTalkAudioEncode") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = message?.text?.join?.(" ") ?? "";
        infoWidget(this).value = text;            // e.g. "6.42 s of audio -> 161 frames at 25 fps"
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
