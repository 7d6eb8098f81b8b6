"""Every string the app shows, in Chinese and English, in one place.

    t("search.button", "zh")                 # -> "搜索"
    t("lib.page_info", "en", page=2, pages=5, n=230)
    pick_lang("zh-CN")                       # -> "zh" (browser locale -> UI language)

Core errors carry English messages written for the CLI; `error_text` wraps them with a
heading in the current language so a Chinese user knows what kind of problem it is, and
the English detail (file names, limits, commands to run) is kept verbatim.
"""
from __future__ import annotations

import re

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
    "app.offline": ("⚠️ **离线模式：** 无法获取所需的模型，现在使用内置的小模型——它只认识彩色几何图形"
                    "（圆形、三角形、正方形、五角星、六边形、十字），请用下方的图形示例试试。\n\n"
                    "**如何获得 ViT-B/32：** 联网启动一次（权重只下载一次并缓存）；在国内可设置 "
                    "`HF_ENDPOINT=https://hf-mirror.com`（会从 Hugging Face 镜像获取同一模型）；或下载 `ViT-B-32.pt` 后用 "
                    "`--model /路径/ViT-B-32.pt`。**读中文的模型：** `--model chinese-clip`。",
                    "⚠️ **No network: using the small built-in model**, which only knows coloured shapes "
                    "(circle, triangle, square, star, hexagon, cross) — try the shape examples below.\n\n"
                    "**To get ViT-B/32:** start once with a network connection (the weights download once into "
                    "the cache); or set `HF_ENDPOINT` to a Hugging Face mirror (the same weights come from the hub); "
                    "or download `ViT-B-32.pt` and pass `--model /path/to/ViT-B-32.pt`. "
                    "**A model that reads Chinese:** `--model chinese-clip`."),
    "app.details": ("技术细节", "Technical details"),
    # the upload area of every image input (replaces Gradio's own "Drop Image Here", which would
    # only switch language on a reload: ui/locale.py)
    "app.drop_image": ("# 把图片拖到这里\n或点击上传，也可以粘贴", "# Drop an image here\nor click to upload, or paste"),
    "warn.unknown_words": ("⚠️ 当前模型从未见过这些词：{words}。它只认识彩色图形，对这些词的打分只是猜测。",
                           "⚠️ The current model has never seen these words: {words}. It only knows coloured "
                           "shapes, so its scores for them are guesses."),
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
    "tab.search": ("图文搜索", "Search"),
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
    "zs.tpl.single": ("单模板：a photo of a {c}.（中文标签用“{c}的照片。”）",
                      "Single: a photo of a {c}. (Chinese labels: {c}的照片。)"),
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
    "search.text": ("搜索文字（中文或英文；可加权组合：\"2:金毛犬\" + 图片ID - 水果）",
                    "Search text (Chinese or English; weighted terms: \"2:golden retriever\" + IMAGE-ID - fruit)"),
    "search.text_ph": ("一只猫 / a cat on a sofa / \"2:红色圆形\" - 蓝色", "a cat on a sofa / 一只猫 / \"2:red circle\" - blue"),
    "search.image": ("查询图片（可选，以图搜图）", "Query image (optional, image→image)"),
    "search.image_weight": ("查询图片的权重（负数表示减去）", "Weight of the query image (negative subtracts it)"),
    "search.add_term": ("加入查询（+ 此图）", "Add to the query (+ this image)"),
    "search.plan": ("查询计划：{plan}", "Query plan: {plan}"),
    "search.minus": ("排除词（逗号分隔，可选）", "Negative terms (comma separated, optional)"),
    "search.minus_ph": ("人, 文字", "people, text"),
    "search.k": ("返回数量 Top-K", "Results (top-K)"),
    "search.threshold": ("相似度阈值（余弦，0 = 不过滤）", "Similarity threshold (cosine; 0 = keep all)"),
    "search.button": ("搜索", "Search"),
    "search.all_k": ("也显示较弱的匹配（全部 K 个）", "Show weak matches too (all K)"),
    "search.weak_hidden": ("另有 {m} 个较弱的匹配已隐藏（得分低于最佳结果的 {pct}%）；勾选“也显示较弱的匹配”可查看全部。",
                           "{m} weaker matches hidden (scoring under {pct}% of the best); tick “Show weak matches "
                           "too” to see all K."),
    "search.weak_marked": ("标有 ◌ 的 {m} 个结果是较弱的匹配（得分低于最佳结果的 {pct}%）。",
                           "The {m} results marked ◌ are weak matches (scoring under {pct}% of the best)."),
    "search.results": ("结果（点击一张图片放大查看；“查找相似图片”以它搜索）",
                       "Results (click one to view it; “Find images similar” searches with it)"),
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
    "cap.unavailable": ("**缺少模型：** {detail}", "**Model missing:** {detail}"),   # the detail says how to supply it
    "cap.offline": ("⚠️ **无法生成描述：** {detail}", "⚠️ **No captions here:** {detail}"),
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
    "lib.confirm": ("⚠️ 确定要从图库中永久删除 **{name}**（{id}）吗？", "⚠️ Delete **{name}** ({id}) from the library for good?"),
    "lib.confirm_yes": ("确定删除", "Yes, delete it"),
    "lib.confirm_no": ("取消", "Cancel"),
    "lib.empty": ("**图库是空的。** 把图片拖到上方的“上传图片”框中再点“加入图库”，或点“添加示例图片”先放入一组示例。",
                  "**The library is empty.** Drop images on “Upload images” above and press “Add to library”, "
                  "or press “Add sample images” to start with the bundled samples."),
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
    "lib.stats": ("**图片：** {n} 张 · **模型：** `{model}`（{dim} 维）· **磁盘：** 图片 {images_mb:.1f} MB，向量 {feats_mb:.1f} MB",
                  "**Images:** {n} · **Model:** `{model}` ({dim}-d) · **Disk:** images {images_mb:.1f} MB, features "
                  "{feats_mb:.1f} MB"),
    "lib.stats_admin": ("**图片：** {n} 张 · **模型：** `{model}`（{dim} 维）· **磁盘：** 图片 {images_mb:.1f} MB，"
                        "向量 {feats_mb:.1f} MB · **位置：** `{path}`",
                        "**Images:** {n} · **Model:** `{model}` ({dim}-d) · **Disk:** images {images_mb:.1f} MB, "
                        "features {feats_mb:.1f} MB · **Path:** `{path}`"),
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
    "search.no_selection": ("请先在搜索结果中点击一张图片。", "Click an image in the results first."),

    # errors (gr.Error); {detail} is the core's English message
    "err.title": ("出错了", "Error"),
    "warn.title": ("注意", "Warning"),
    "err.image": ("无法读取图片 {name}：{reason}", "Cannot read image {name}: {reason}"),
    "err.upload_gone": ("这张图片已从服务器上删除（上传的图片用完一分钟后即删除）：请重新上传。",
                        "This image is no longer on the server (uploads are deleted a minute after use): "
                        "upload it again."),
    "err.no_image": ("请先上传或选择一张图片。", "Upload or pick an image first."),
    "err.query": ("查询无效：{detail}", "Invalid query: {detail}"),
    "err.labels": ("标签无效：{detail}", "Invalid labels: {detail}"),
    "err.library": ("图库错误：{detail}", "Library error: {detail}"),
    "err.permission": ("没有权限（仅限教师）：{detail}", "Not allowed (teacher only): {detail}"),
    "err.quota": ("超出上传限额：{detail}", "Over the upload limit: {detail}"),
    "err.model": ("模型不可用：{detail}", "Model unavailable: {detail}"),
}


# the Learn tab (ui/learn.py)
_S.update({
    "tab.learn": ("学习", "Learn"),
    "learn.intro": ("### 看 CLIP 如何学习\n训练一个迷你 CLIP 并实时观察损失曲线，查看图库的嵌入空间，"
                    "画出图文相似度矩阵，比较零样本分类与线性探针，并在自己的图文对上微调。",
                    "### Watch a CLIP learn\nTrain a mini-CLIP and watch its loss live, look at the library's "
                    "embedding space, draw the image–text similarity matrix, compare zero-shot with a linear probe, "
                    "and fine-tune on your own pairs."),
    "learn.train_title": ("① 实时训练迷你 CLIP", "① Train a mini-CLIP live"),
    "learn.train_help": ("在内置的 Shapes 数据集（或服务器上的 Flickr8k 文件夹）上从零训练。同一时间只能运行一个训练；"
                         "共享应用中只有教师可以开始训练。**预期：** 默认设置（4 轮 × 3072 张 32 像素图片）在空闲的双核 CPU "
                         "上约一两分钟；第 1 轮就学会颜色（颜色零样本准确率从随机的 12% 升到 50% 以上），检索召回率随之上升；"
                         "形状更难，要更多轮次和图片（内置模型训练了 10 轮 × 5000 张）。",
                         "Trains from scratch on the bundled Shapes set (or a Flickr8k folder on the server). One "
                         "training runs at a time; on a shared app only the teacher may start one. **What to expect:** "
                         "the defaults (4 epochs x 3072 images of 32 px) take a minute or two on an idle 2-core CPU; "
                         "colours are learned in the first epoch (colour zero-shot top-1 from chance, 12%, to over "
                         "50%) and retrieval recall climbs with them; shapes are harder and need more epochs and "
                         "images (the bundled model had 10 epochs x 5000)."),
    "learn.data": ("数据", "Data"),
    "learn.data_info": ("shapes 或 flickr8k:服务器上的文件夹", "shapes, or flickr8k:FOLDER on the server"),
    "learn.epochs": ("训练轮数", "Epochs"),
    "learn.images": ("训练图片数（Shapes）", "Training images (Shapes)"),
    "learn.batch": ("批大小", "Batch size"),
    "learn.text_tower": ("文本编码器", "Text tower"),
    "learn.transformer": ("Transformer", "Transformer"),
    "learn.lstm": ("LSTM", "LSTM"),
    "learn.hard": ("困难负样本（换掉形状的描述）", "Hard negatives (captions with the shape swapped)"),
    "learn.start": ("开始训练", "Start training"),
    "learn.stop": ("停止", "Stop"),
    "learn.watch": ("查看进度", "Watch"),
    "learn.use": ("使用此模型", "Use this model"),
    "learn.loss_plot": ("训练损失（每步）", "Training loss (per step)"),
    "learn.metric_plot": ("验证集指标（每轮，%）", "Held-out metrics (per epoch, %)"),
    "learn.ax_step": ("步数", "step"),
    "learn.ax_loss": ("损失", "loss"),
    "learn.ax_epoch": ("轮次", "epoch"),
    "learn.ax_value": ("数值（%）", "value (%)"),
    "learn.ax_metric": ("指标", "metric"),
    "learn.ax_x": ("投影第 1 维", "projection, axis 1"),
    "learn.ax_y": ("投影第 2 维", "projection, axis 2"),
    "learn.ax_label": ("零样本标签", "zero-shot label"),
    "lib.unit": ("张图片", "images"),
    "learn.bad_data": ("数据只能是 shapes 或 flickr8k:文件夹。", "Data must be shapes or flickr8k:FOLDER."),
    "learn.busy": ("已有一个训练在运行；请等待它结束或先停止它。", "A training is already running; wait for it or stop it first."),
    "learn.idle": ("当前没有训练在运行。", "No training is running."),
    "learn.stopping": ("正在停止（当前这一步结束后）……", "Stopping after the current step…"),
    "learn.running": ("⏳ 训练中：`{run}`", "⏳ Training: `{run}`"),
    "learn.stopped": ("⏹️ 已停止：`{run}`（可用 `python -m core.train --resume` 继续）",
                      "⏹️ Stopped: `{run}` (continue with `python -m core.train --resume`)"),
    "learn.failed": ("❌ 训练失败：{error}", "❌ Training failed: {error}"),
    "learn.done": ("✅ 训练完成：`{run}`", "✅ Training finished: `{run}`"),
    "learn.progress": ("第 {step} / {total} 步，已完成 {epochs} 轮", "Step {step} of {total}, {epochs} epochs done"),
    "learn.last_epoch": ("最近一轮：平均召回率 {recall:.1f}%，颜色零样本 top-1 {colour:.1f}%（随机 12.5%），"
                         "形状零样本 top-1 {top1:.1f}%（随机 16.7%）",
                         "Last epoch: mean recall {recall:.1f}%, zero-shot colour top-1 {colour:.1f}% (chance 12.5%), "
                         "shape top-1 {top1:.1f}% (chance 16.7%)"),
    "learn.can_use": ("最佳模型：`{best}`。点击“使用此模型”让整个应用改用它（它有自己单独的图库）。",
                      "Best model: `{best}`. Press “Use this model” to switch the whole app to it (with its own library)."),
    "learn.no_model": ("还没有训练好的模型：先完成至少一轮训练（且训练已结束）。",
                       "No trained model yet: finish at least one epoch (and let the training end) first."),
    "learn.switched": ("✅ 应用已改用模型 `{model}`，图库位于 `{path}`（{n} 张图片，已加入示例图片）。所有标签页的下一次操作都会使用它。",
                       "✅ The app now uses `{model}`, with its own library in `{path}` ({n} images, samples added). "
                       "Every tab's next action uses it."),
    "learn.map_title": ("② 嵌入空间地图", "② The embedding space"),
    "learn.map_help": ("把图库中每张图片的向量投影到二维：PCA 立即完成，t-SNE 需要几秒。输入标签可按零样本结果着色；"
                       "输入一句话可看它落在哪里。鼠标悬停查看缩略图，框选一段查看其中的图片。",
                       "Each library image's embedding projected to 2-D: PCA is instant, t-SNE takes seconds. Type "
                       "labels to colour points by their zero-shot label; type a sentence to see where it lands. "
                       "Hover for a thumbnail; drag across the plot to list the images in that range."),
    "learn.method": ("投影方法", "Projection"),
    "learn.pca": ("PCA（立即）", "PCA (instant)"),
    "learn.tsne": ("t-SNE（较慢）", "t-SNE (slower)"),
    "learn.map_labels": ("着色标签（可选）", "Colour by labels (optional)"),
    "learn.map_labels_ph": ("例如：圆形, 正方形, 星形", "e.g. circle, square, star"),
    "learn.map_query": ("文字查询（可选）", "Text query (optional)"),
    "learn.map_query_ph": ("例如：红色圆形", "e.g. a red circle"),
    "learn.map_draw": ("画出地图", "Draw the map"),
    "learn.map_plot": ("图库嵌入（二维投影）", "Library embeddings (2-D projection)"),
    "learn.map_picked": ("框选范围内的图片", "Images in the selected range"),
    "learn.map_image": ("图片", "image"),
    "learn.map_count": ("显示 {shown} / {total} 张图片（{method}）。", "Showing {shown} of {total} images ({method})."),
    "learn.map_empty": ("图库是空的：先在“图库”标签页添加图片。", "The library is empty: add images in the Library tab first."),
    "learn.map_sampled": ("图库有 {total} 张图片，超过上限：随机抽取了 {n} 张（固定种子，每次相同）。",
                          "The library holds {total} images, above the limit: a fixed random sample of {n} is shown."),
    "learn.map_knn": ("t-SNE 无法投影新的点：查询显示在与它最相近的 5 张图片的平均位置。",
                      "t-SNE cannot project a new point: the query is shown at the mean position of its 5 nearest images."),
    "learn.sim_title": ("③ 相似度矩阵", "③ Similarity matrix"),
    "learn.sim_help": ("选最多 8 张图片、写最多 8 句描述（中文或英文，每行一句），得到 CLIP 的余弦相似度热图，"
                       "与 CLIP 官方 notebook 中的图一样。",
                       "Pick up to 8 images and write up to 8 captions (Chinese or English, one per line) to get "
                       "CLIP's cosine-similarity heat map, as in CLIP's own notebook."),
    "learn.sim_pick": ("图库中的图片", "Library images"),
    "learn.sim_pick_info": ("从列表中选，或输入图片 id", "choose from the list, or type an image id"),
    "learn.sim_files": ("或上传图片", "Or upload images"),
    "learn.sim_texts": ("描述（每行一句）", "Captions (one per line)"),
    "learn.sim_texts_ph": ("一只猫\na red circle", "a cat\n红色圆形"),
    "learn.sim_go": ("计算相似度", "Compute the similarity"),
    "learn.sim_empty": ("请至少选择一张图片并写一句描述。", "Pick at least one image and write at least one caption."),
    "learn.sim_many": ("最多 {n} 张图片和 {n} 句描述。", "At most {n} images and {n} captions."),
    "learn.sim_caption": ("列：图片；行：描述；格中为余弦相似度（颜色越深越相似）。",
                          "Columns: images; rows: captions; each cell is the cosine similarity (darker = more similar)."),
    "learn.probe_title": ("④ 零样本 vs 线性探针", "④ Zero-shot vs linear probe"),
    "learn.probe_help": ("输入类别名。默认用文件名或已存描述中含有类别名的图库图片作为标注；也可以逐行写“类别: 图片id id …”。"
                         "每类留出一半作测试，在已存特征上训练逻辑回归探针，与零样本准确率对比（CLIP 论文中的比较）。",
                         "Type class names. By default every library image whose file name or stored caption contains "
                         "one class name is labelled with it; or write lines 'class: id id …'. Half of each class is "
                         "held out; a logistic-regression probe trains on the stored features and is compared with "
                         "zero-shot accuracy (the CLIP paper's comparison)."),
    "learn.probe_classes": ("类别（逗号分隔）", "Classes (comma-separated)"),
    "learn.probe_classes_ph": ("例如：circle, square, star", "e.g. circle, square, star"),
    "learn.probe_assign": ("手动标注（可选）", "Manual labels (optional)"),
    "learn.probe_assign_ph": ("circle: 3f2a9c0e11d4 9b1c2d3e4f50", "circle: 3f2a9c0e11d4 9b1c2d3e4f50"),
    "learn.probe_go": ("训练探针并比较", "Train the probe and compare"),
    "learn.probe_head": ("**线性探针 {probe:.1f}%** vs **零样本 {zs:.1f}%**（{train} 张训练，{test} 张测试）",
                         "**Linear probe {probe:.1f}%** vs **zero-shot {zs:.1f}%** ({train} training, {test} held-out images)"),
    "learn.probe_cols": ("| 类别 | 训练 | 测试 | 探针 | 零样本 |", "| class | train | test | probe | zero-shot |"),
    "learn.probe_few": ("⚠️ “{label}” 只有 {n} 张标注图片（至少需要 2 张），未参与比较。",
                        "⚠️ '{label}' has {n} labelled images (2 needed) and is left out."),
    "learn.probe_scan": ("ℹ️ 只读取了前 {n} 张图片来寻找标注。", "ℹ️ Only the first {n} images were read for labels."),
    "learn.probe_why": ("探针从你的标注中学习，零样本只读类别名：标注越多，探针通常越好。",
                        "The probe learns from your labels; zero-shot reads only the class names. With more labels "
                        "the probe usually wins."),
    "learn.ft_title": ("⑤ 在自己的图文对上微调", "⑤ Fine-tune on your own pairs"),
    "learn.ft_body": ("在服务器上运行（会输出微调前后的 Recall@K、报告和图表）：\n\n"
                      "```\npython -m core.train --init ViT-B/32 --data csv:我的图文对.csv --epochs 3 --out runs/ft\n"
                      "python -m core.train --init ViT-B/32 --data flickr8k:/data/flickr8k --mode adapter --epochs 10 --out runs/ft\n```\n\n"
                      "CSV 每行 `图片路径,描述`。`--mode full` 以小学习率微调全部权重；`--mode adapter` 只训练一个轻量适配层。"
                      "然后用 `python demo.py --model runs/ft/finetuned.pt` 使用它。",
                      "Run on the server (prints Recall@K before and after, writes a report and plots):\n\n"
                      "```\npython -m core.train --init ViT-B/32 --data csv:my_pairs.csv --epochs 3 --out runs/ft\n"
                      "python -m core.train --init ViT-B/32 --data flickr8k:/data/flickr8k --mode adapter --epochs 10 --out runs/ft\n```\n\n"
                      "The CSV has one `image path,caption` per row. `--mode full` tunes every weight with a small "
                      "learning rate; `--mode adapter` trains a light adapter only. Then serve it with "
                      "`python demo.py --model runs/ft/finetuned.pt`."),
})


def t(key: str, lang: str, **fields) -> str:
    """The string `key` in `lang` ("zh" | "en"), with `fields` formatted in ("1 image", not "1 images")."""
    zh, en = _S[key]
    if lang == "zh":
        return zh.format(**fields) if fields else zh
    return _ONE.sub(r"\1", en.format(**fields)) if fields else en


# English counts: a count of one takes the singular ("1 images found." -> "1 image found.")
_ONE = re.compile(r"(?<![\d.,])(1 (?:image|epoch|file|step|label|word|text|row|duplicate|page|result|match|group))s\b")


def has_key(text: str) -> bool:
    return text in _S


def pick_lang(value: str | None) -> str:
    """A UI language from a flag or a browser locale ("zh-CN", "zh-TW", "en-US", ...)."""
    return "zh" if (value or "").strip().lower().startswith("zh") else "en"


def choices(keys: dict[str, str], lang: str) -> list[tuple[str, str]]:
    """Dropdown choices [(shown text, value)] from {value: string key}."""
    return [(t(k, lang), v) for v, k in keys.items()]


# caption tab: progress steps (the first caption loads the model: minutes on a slow link)
_S.update({
    "cap.loading": ("正在加载描述模型（第一次需下载约 1 GB）…", "loading the captioner (first time: downloads ~1 GB)…"),
    "cap.writing": ("正在生成英文描述…", "writing the English caption…"),
    "cap.translating": ("正在翻译成中文…", "translating into Chinese…"),
})


# Where the library lives on a Hugging Face Space (ui/app.py _banner; the texts of warnings come from core/hosting/sync.py)
_S.update({
    "storage.warning": ("⚠️ **图库存储：** {warning}", "⚠️ **Library storage:** {warning}"),
    "storage.synced": ("💾 图库每 {every} 分钟备份到 Hugging Face 数据集 `{repo}`，Space 重启后自动恢复"
                       "（重启前最后几分钟内添加的图片可能没有备份上）。",
                       "💾 The library is backed up to the Hugging Face dataset `{repo}` every {every} minutes and "
                       "restored after a Space restart (images added in the last minutes before a restart may miss "
                       "the backup)."),
    "storage.persistent": ("💾 图库保存在 Space 的持久磁盘上（{disk}），重启后仍在。",
                           "💾 The library lives on the Space's persistent disk ({disk}) and survives restarts."),
})


# Protecting a class (core/safety): the banner, the upload summary, the teacher's review panel (ui/review.py)
_S.update({
    "err.refused": ("ℹ️ 提示：{detail}", "ℹ️ Note: {detail}"),
    "safety.banner": ("🛡️ **安全过滤：** {mode} · {filter}", "🛡️ **Safety filter:** {mode} · {filter}"),
    "safety.standard": ("标准（被标记的上传先由老师查看）", "standard (flagged uploads wait for the teacher)"),
    "safety.strict": ("严格（学生的每次上传都先由老师批准）", "strict (every student upload waits for the teacher)"),
    "safety.cannot_judge": ("⚠️ 注意：{detail}", "⚠️ Note: {detail}"),
    "lib.held": ("等待老师审核：{n} 张（审核前只有老师能看到）。", "Waiting for the teacher's review: {n} images (until "
                 "then only the teacher sees them)."),
    "lib.near_item": ("与已有图片几乎相同：{id} ≈ {older}（相似度 {cos}）", "near-duplicate of an image already stored: {id} ≈ "
                      "{older} (cosine {cos})"),
    "review.title": ("🛡️ 审核与近似重复（仅教师可见）", "🛡️ Review and near-duplicates (teacher only)"),
    "review.gallery": ("等待审核的图片（点击选中）", "Images waiting for review (click to select)"),
    "review.selected": ("选中图片的 id", "Selected image id"),
    "review.approve": ("✅ 批准：所有人可见", "✅ Approve: everyone may see it"),
    "review.remove": ("🗑️ 删除", "🗑️ Remove"),
    "review.show_waiting": ("等待审核的图片", "Images waiting for review"),
    "review.show_duplicates": ("近似重复的图片", "Near-duplicate images"),
    "review.count": ("等待审核：{n} 张图片。", "Waiting for review: {n} images."),
    "review.none": ("没有等待审核的图片。", "No image waits for review."),
    "review.no_selection": ("请先在上方点击一张图片。", "Click an image above first."),
    "review.not_waiting": ("图片 {id} 没有在等待审核。", "Image {id} is not waiting for review."),
    "review.approved": ("已批准 {name}（{id}）：现在所有人都能看到和搜到它。",
                        "Approved {name} ({id}): everyone can now see and find it."),
    "review.groups": ("{n} 组近似重复的图片：每组第一张最早加入；保留一张，删除其余的。",
                      "{n} groups of near-duplicates, the oldest first in each: keep one, remove the rest."),
    "review.no_groups": ("没有近似重复的图片。", "No near-duplicate images."),
    "review.group": ("第 {g} 组", "group {g}"),
    "review.oldest": ("最早", "oldest"),
    "review.copy": ("重复", "copy"),
    "review.mark": ("待审核", "waiting for review"),
})


# the health panel (ui/health.py): the teacher's view of the class and the server
_S.update({
    "tab.health": ("运行状态", "Health"),
    "health.title": ("### 课堂与服务器状态", "### How the class and the server are doing"),
    "health.summary": ("**模型：** `{model}` · **运行于：** {runtime} · **已运行：** {uptime} · 每 {every} 秒刷新",
                       "**Model:** `{model}` · **Runs on:** {runtime} · **Up:** {uptime} · refreshes every {every} s"),
    "health.no_requests": ("最近 {minutes} 分钟还没有请求。", "No requests in the last {minutes} minutes yet."),
    "health.table_head": ("| 操作 | 每分钟请求（{short} 分钟） | p50 / p95（{short} 分钟） | 每分钟请求（{long} 分钟） | "
                          "p50 / p95（{long} 分钟） | 拒绝 / 失败 | 来源 |\n|---|--:|--:|--:|--:|--:|---|",
                          "| Action | Requests/min ({short} min) | p50 / p95 ({short} min) | Requests/min ({long} min) | "
                          "p50 / p95 ({long} min) | Refused / failed | From |\n|---|--:|--:|--:|--:|--:|---|"),
    "health.note": ("时间从操作开始执行算起，不含在队列中的等待（见下方的队列）。",
                    "Times count from the moment an action starts to run; waiting in the queue is not included "
                    "(see the queue below)."),
    "health.action.search": ("搜索", "search"), "health.action.classify": ("分类", "classify"),
    "health.action.caption": ("描述", "caption"), "health.action.add": ("上传", "add"),
    "health.action.page": ("图库翻页", "library page"), "health.action.train": ("训练", "train"),
    "health.surface.page": ("网页", "page"), "health.surface.api": ("JSON 接口", "JSON API"),
    "health.surface.mcp": ("MCP 工具", "MCP tool"), "health.surface.cli": ("命令行", "command line"),
    "health.surface.python": ("Python 脚本", "Python"),
    "health.queue": ("**队列：** {waiting} 个等待，{running} 个运行中", "**Queue:** {waiting} waiting, {running} running"),
    "health.queue_none": ("**队列：** 未启动", "**Queue:** not started"),
    "health.memory": ("**内存（RSS）：** {rss}", "**Memory (RSS):** {rss}"),
    "health.disk": ("**图库：** {n} 张图片 · 图片占用 {used} / 预算 {budget}{share} · 向量 {features} · 磁盘剩余 {free}",
                    "**Library:** {n} images · images use {used} of the {budget} budget{share} · features {features} "
                    "· disk free {free}"),
    "health.errors_none": ("✅ 最近 {minutes} 分钟没有错误。", "✅ No errors in the last {minutes} minutes."),
    "health.errors": ("**最近 {minutes} 分钟的错误（按类型）：** {kinds}", "**Errors in the last {minutes} minutes, by kind:** {kinds}"),
    "health.last": ("**最近几条：**", "**The last few:**"),
    "health.problem": ("- {time} · {action} · {surface} · {outcome} `{kind}`：{message}",
                       "- {time} · {action} · {surface} · {outcome} `{kind}`: {message}"),
    "health.outcome.refused": ("拒绝", "refused"), "health.outcome.failed": ("失败", "failed"),
})

# the MCP tools for AI assistants (ui/mcp.py): an assistant's user may read either language, so each is said in both
_S.update({
    "mcp.login": ("请登录：在 MCP 客户端的配置中加入 HTTP Basic 请求头（Authorization: Basic base64(用户名:密码)），"
                  "使用老师提供的账号。",
                  "Log in: add an HTTP Basic header (Authorization: Basic base64(user:password)) with the login your "
                  "teacher gave you to the MCP client's configuration."),
    "mcp.bad_url": ("本应用不会从其他网站下载图片：请以 base64 数据（data:image/png;base64,...）提供图片，或给出本应用"
                    "图库图片的 image_url（…/api/images/ID）。",
                    "This app does not fetch images from other sites: send the image as base64 data "
                    "(data:image/png;base64,...), or give the image_url of one of this app's library images "
                    "(…/api/images/ID)."),
    "mcp.down": ("⚠️ 已要求启用 MCP（--mcp），但 MCP 服务器没有启动，AI 助手无法连接：{reason}。"
                 "请用 pip install \"gradio[mcp]==6.31.0\" 安装（它要求 mcp<2；mcp 2.x 会让服务器静默失败），然后重启。",
                 "⚠️ MCP was asked for (--mcp) but the MCP server did not start, so AI assistants cannot connect: "
                 "{reason}. Install it with pip install \"gradio[mcp]==6.31.0\" (it pins mcp<2; with mcp 2.x the "
                 "server fails silently) and start again."),
    "mcp.no_workbench": ("应用未能打开模型或图库，没有可提供的工具", "the app could not open its model or library, so it has no tools to serve"),
})
