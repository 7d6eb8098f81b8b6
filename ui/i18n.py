"""Every string the app shows, in Chinese and English, in one place.

    t("search.button", "zh")                 # -> "搜索"
    t("lib.page_info", "en", page=2, pages=5, n=230)
    pick_lang("zh-CN")                       # -> "zh" (browser locale -> UI language)

Core errors carry English messages written for the CLI; `error_text` wraps them with a
heading in the current language so a Chinese user knows what kind of problem it is, and
the English detail (file names, limits, commands to run) is kept verbatim.
"""
from __future__ import annotations

__all__ = ["LANGS", "DEFAULT_LANG", "AUTH_MESSAGE", "t", "has_key", "pick_lang", "choices"]

LANGS = ("zh", "en")
DEFAULT_LANG = "en"
# The login page comes before any language choice, so it speaks both.
AUTH_MESSAGE = "请输入老师提供的用户名和密码。<br>Enter the user name and password your teacher gave you."

# key -> (中文, English)
_S: dict[str, tuple[str, str]] = {
    # header and banners
    "app.title": ("# 图文多模态工作台 · CLIP Workbench",
                  "# CLIP Workbench · 图文多模态工作台"),
    "app.subtitle": ("零样本分类、以文搜图、以图搜图、图像描述，以及不断增长的本地图库。模型：`{model}`，设备：{device}",
                     "Zero-shot classification, text→image and image→image search, captions, and a growing local "
                     "image library. Model: `{model}`, device: {device}"),
    "app.lang": ("界面语言 / Language", "界面语言 / Language"),
    "app.notice": ("⚠️ **注意：** {notice}", "⚠️ **Note:** {notice}"),
    "app.broken_title": ("# 图文多模态工作台无法启动模型", "# The CLIP Workbench could not start its model"),
    "app.broken_body": ("**出了什么问题：** {problem}\n\n**如何解决：** {fix}\n\n修复后重新运行 `python demo.py`。",
                        "**What is wrong:** {problem}\n\n**How to fix it:** {fix}\n\nThen run `python demo.py` again."),
    "fix.mismatch": ("图库由另一个模型建立，不同模型的向量不能混用。可以用 `--model` 指定建库时的模型，用 `--library` 换一个图库文件夹，"
                     "或运行 `python -m core library reindex --model {model}` 用新模型重新编码全部图片。",
                     "The library was built with another model and embeddings are never mixed. Start with that "
                     "model (`--model`), use another folder (`--library`), or re-encode every image with "
                     "`python -m core library reindex --model {model}`."),
    "fix.model": ("用 `--model /本地/路径` 指定已下载的权重（OpenAI .pt 文件或 save_pretrained 文件夹）；国内可设置 "
                  "`HF_ENDPOINT=https://hf-mirror.com` 使用镜像；或联网运行一次以填充缓存。内置离线小模型应在 "
                  "`assets/mini/mini_clip_shapes.pt`（可用 `python -m core.train` 训练）。",
                  "Pass downloaded weights with `--model /local/path` (an OpenAI .pt file or a save_pretrained "
                  "folder); set `HF_ENDPOINT=https://hf-mirror.com` to use a mirror; or run once online to fill the "
                  "cache. The bundled offline mini model belongs at `assets/mini/mini_clip_shapes.pt` (train it "
                  "with `python -m core.train`)."),
    "fix.other": ("检查命令行参数（`python demo.py --help`）。", "Check the command-line flags (`python demo.py --help`)."),

    # tabs
    "tab.classify": ("零样本分类", "Zero-shot classification"),
    "tab.search": ("以文搜图", "Search"),
    "tab.caption": ("图像描述", "Captions"),
    "tab.library": ("图库", "Library"),

    # zero-shot
    "zs.image": ("图片（上传、粘贴或选择示例）", "Image (upload, paste or pick a sample)"),
    "zs.labelset": ("标签集", "Label set"),
    "zs.set.custom": ("自定义标签（在下方输入）", "My own labels (type below)"),
    "zs.set.imagenet1k": ("ImageNet-1k（1000 类）", "ImageNet-1k (1000 classes)"),
    "zs.set.cifar10": ("CIFAR-10（10 类）", "CIFAR-10 (10 classes)"),
    "zs.set.cifar100": ("CIFAR-100（100 类）", "CIFAR-100 (100 classes)"),
    "zs.labels": ("标签（逗号或换行分隔，中英文均可）", "Labels (comma or newline separated, Chinese or English)"),
    "zs.labels_ph": ("猫, 狗, 小鸟", "cat, dog, bird"),
    "zs.templates": ("提示模板", "Prompt templates"),
    "zs.tpl.single": ("单模板：a photo of a {c}.", "Single: a photo of a {c}."),
    "zs.tpl.selected7": ("7 个精选模板", "7 selected templates"),
    "zs.tpl.ensemble80": ("80 模板集成", "80-template ensemble"),
    "zs.tpl.zh": ("中文模板", "Chinese templates"),
    "zs.tpl.custom": ("自定义模板（含 {c}）", "Custom template (with {c})"),
    "zs.custom_tpl": ("自定义模板，{c} 处填入标签", "Custom template; {c} is replaced by each label"),
    "zs.add": ("同时把这张图片加入图库", "Also add this image to the library"),
    "zs.button": ("分类", "Classify"),
    "zs.result": ("前 5 名概率", "Top-5 probabilities"),
    "zs.examples": ("示例图片", "Sample images"),
    "zs.added": ("已加入图库：{summary}", "Added to the library: {summary}"),

    # search
    "search.text": ("搜索文字（中文或英文）", "Search text (Chinese or English)"),
    "search.text_ph": ("一只猫 / a cat on a sofa", "a cat on a sofa / 一只猫"),
    "search.image": ("查询图片（可选，以图搜图）", "Query image (optional, image→image)"),
    "search.minus": ("排除词（逗号分隔，可选）", "Negative terms (comma separated, optional)"),
    "search.minus_ph": ("人, 文字", "people, text"),
    "search.k": ("返回数量 Top-K", "Results (top-K)"),
    "search.threshold": ("相似度阈值（余弦，0 = 不过滤）", "Similarity threshold (cosine; 0 = keep all)"),
    "search.button": ("搜索", "Search"),
    "search.results": ("结果（点击一张图片，查找相似图片）", "Results (click one to find similar images)"),
    "search.selected": ("选中图片的 id", "Selected image id"),
    "search.similar": ("查找与此图相似的图片", "Find images similar to this one"),
    "search.used": ("英文查询 / English query used: “{text}”", "English query used / 英文查询: “{text}”"),
    "search.note": ("说明：{note}", "Note: {note}"),
    "search.none": ("没有结果。", "No results."),
    "search.empty_lib": ("图库是空的：请先在“图库”页上传图片。", "The library is empty: add images in the Library tab first."),
    "search.count": ("找到 {n} 张图片。", "{n} images found."),
    "search.similar_to": ("与 {name}（{id}）相似的图片：{n} 张。", "Images similar to {name} ({id}): {n}."),

    # captions
    "cap.image": ("图片", "Image"),
    "cap.button": ("生成描述", "Caption"),
    "cap.en": ("英文描述", "English caption"),
    "cap.zh": ("中文描述", "Chinese caption"),
    "cap.unavailable": ("**缺少模型：** {detail}\n\n**如何提供：** 用 `python demo.py --captioner /本地/文件夹 --translator "
                        "/本地/文件夹` 指定 save_pretrained 保存的模型文件夹；或设置镜像 `HF_ENDPOINT=https://hf-mirror.com` "
                        "后联网运行一次以下载到缓存。",
                        "**Model missing:** {detail}\n\n**How to supply it:** start with `python demo.py --captioner "
                        "/local/folder --translator /local/folder` (folders saved with save_pretrained), or set a mirror "
                        "`HF_ENDPOINT=https://hf-mirror.com` and run once online to fill the cache."),
    "cap.no_zh": ("没有中文描述：{detail}", "No Chinese caption: {detail}"),
    "cap.done": ("完成。", "Done."),

    # library
    "lib.upload": ("上传图片（可多选）", "Upload images (many at once)"),
    "lib.add": ("加入图库", "Add to library"),
    "lib.seed": ("添加示例图片", "Add sample images"),
    "lib.gallery": ("图库（最新的在前；点击选中）", "Library (newest first; click to select)"),
    "lib.page": ("页码", "Page"),
    "lib.prev": ("◀ 上一页", "◀ Previous"),
    "lib.next": ("下一页 ▶", "Next ▶"),
    "lib.page_info": ("第 {page} / {pages} 页，共 {n} 张图片", "Page {page} of {pages}, {n} images"),
    "lib.selected": ("选中图片的 id", "Selected image id"),
    "lib.remove": ("删除选中的图片", "Delete selected image"),
    "lib.stats_button": ("刷新统计", "Refresh stats"),
    "lib.verify": ("检查图库", "Verify library"),
    "lib.compact": ("压缩日志", "Compact journal"),
    "lib.repair": ("修复图库", "Repair library"),
    "lib.progress": ("正在加入图库", "Adding to library"),
    "lib.summary": ("新增 {added} 张，已存在 {dups} 张，无法读取 {errors} 张。图库现有 {n} 张。",
                    "Added {added}, already present {dups}, unreadable {errors}. The library now holds {n} images."),
    "lib.dup_item": ("已存在：{name}", "already present: {name}"),
    "lib.error_item": ("无法读取：{name}：{reason}", "unreadable: {name}: {reason}"),
    "lib.no_files": ("请先选择要上传的图片。", "Choose some image files to upload first."),
    "lib.stats": ("**图片：** {n} 张 · **模型：** `{model}`（{dim} 维）· **磁盘：** 图片 {images_mb:.1f} MB，向量 {feats_mb:.1f} MB"
                  " · **位置：** `{path}`",
                  "**Images:** {n} · **Model:** `{model}` ({dim}-d) · **Disk:** images {images_mb:.1f} MB, features "
                  "{feats_mb:.1f} MB · **Path:** `{path}`"),
    "lib.verify_ok": ("✅ 图库完好：{rows} 行，每行都有图片，每张图片都有对应行。",
                      "✅ The library is healthy: {rows} rows, every row has its image and every image its row."),
    "lib.verify_bad": ("⚠️ 发现问题：缺失图片 {missing}，多余文件 {orphans}，向量有效：{finite}。",
                       "⚠️ Problems found: missing files {missing}, orphan files {orphans}, features finite: {finite}."),
    "lib.repaired": ("已修复：删除 {removed} 个缺失图片的行，重新加入 {readded} 张失去行的图片。图库现有 {n} 张。",
                     "Repaired: {removed} rows without an image removed, {readded} images without a row re-added. "
                     "The library now holds {n} images."),
    "lib.compacted": ("已压缩：{n} 张图片已写入 features_library.pth。", "Compacted: {n} images folded into features_library.pth."),
    "lib.removed": ("已删除 {name}（{id}）。图库现有 {n} 张。", "Deleted {name} ({id}). The library now holds {n} images."),
    "lib.no_selection": ("请先在图库中点击一张图片。", "Click an image in the library first."),

    # errors (gr.Error); {detail} is the core's English message
    "err.title": ("出错了", "Error"),
    "warn.title": ("注意", "Warning"),
    "err.image": ("无法读取图片 {name}：{reason}", "Cannot read image {name}: {reason}"),
    "err.no_image": ("请先上传或选择一张图片。", "Upload or pick an image first."),
    "err.query": ("查询无效：{detail}", "Invalid query: {detail}"),
    "err.empty_query": ("查询为空：请输入文字（如“一只猫”）或提供一张查询图片。",
                        "Empty query: type some words (e.g. 'a cat on a sofa') or give a query image."),
    "err.labels": ("标签无效：{detail}", "Invalid labels: {detail}"),
    "err.library": ("图库错误：{detail}", "Library error: {detail}"),
    "err.model": ("模型不可用：{detail}", "Model unavailable: {detail}"),
}


def t(key: str, lang: str, **fields) -> str:
    """The string `key` in `lang` ("zh" | "en"), with `fields` formatted in."""
    zh, en = _S[key]
    text = zh if lang == "zh" else en
    return text.format(**fields) if fields else text


def has_key(text: str) -> bool:
    return text in _S


def pick_lang(value: str | None) -> str:
    """A UI language from a flag or a browser locale ("zh-CN", "zh-TW", "en-US", ...)."""
    return "zh" if (value or "").strip().lower().startswith("zh") else "en"


def choices(keys: dict[str, str], lang: str) -> list[tuple[str, str]]:
    """Dropdown choices [(shown text, value)] from {value: string key}."""
    return [(t(k, lang), v) for v, k in keys.items()]
