package cluster

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// ImageSpec describes an image of random layers to generate and push.
type ImageSpec struct {
	Repo string // e.g. "pulltrace/big"
	Tag  string // "" means "latest"
	// LayerSizes are the compressed sizes of the new layers, in order. They are met
	// exactly down to about 2 KiB (the smallest gzip'd tar); smaller asks get that.
	LayerSizes []int64
	// BaseFrom puts that image's layers (for the same platform) below the new ones, so
	// the two images share blobs the way images built FROM one base do.
	BaseFrom *Image
	// Platforms like "linux/amd64" or "linux/arm/v7"; empty means the host's linux
	// platform. More than one makes a multi-arch index with distinct layers per platform.
	Platforms []string
	// Compression of the new layers: "" (gzip, sizes exact), "zstd" or "none" (a plain
	// tar); zstd and plain layers come out near LayerSizes rather than exactly at them.
	Compression string
	// Runnable puts a busybox layer first and makes the image run `sleep` forever, so that
	// a real kubelet's pods of it reach Running (the random layers are only data).
	Runnable bool
}

// Layer is one layer as the manifest lists it.
type Layer struct {
	Digest    string // "sha256:<hex>"
	Size      int64  // compressed size, what containerd's ingest Total shows
	MediaType string
}

// Image is a pushed image.
type Image struct {
	// Ref is the tagged reference through the throttling proxy: what pulls use.
	Ref string
	// DirectRef is the same reference on the registry itself (unthrottled).
	DirectRef string
	Repo, Tag string
	// Digest is what the tag resolves to: the index digest for an index, else the
	// manifest digest.
	Digest string
	// IndexDigest is set when the image is a multi-platform index.
	IndexDigest string
	// ManifestDigests maps each platform ("linux/amd64") to its manifest digest.
	ManifestDigests map[string]string
	// Platform is the one Layers and ConfigDigest describe: the host's when present.
	Platform string
	// ConfigDigest is Platform's config blob digest.
	ConfigDigest string
	// Layers are Platform's layers, base first.
	Layers []Layer

	layers map[string][]v1.Layer
}

// TotalSize is the sum of Layers' sizes.
func (im *Image) TotalSize() int64 {
	var n int64
	for _, l := range im.Layers {
		n += l.Size
	}
	return n
}

// PullRef is the reference with the proxy address for repo:tag.
func (c *Cluster) PullRef(repo, tag string) string { return c.ProxyAddr + "/" + repo + ":" + tag }

// PushImage generates the image spec describes and pushes it to the registry directly
// (not through the proxy, so the pull rate never slows set-up).
func (c *Cluster) PushImage(ctx context.Context, spec ImageSpec) (*Image, error) {
	if c.RegistryAddr == "" {
		return nil, errors.New("cluster runs without a registry")
	}
	if spec.Repo == "" {
		return nil, errors.New("push image: empty repo")
	}
	if spec.Tag == "" {
		spec.Tag = "latest"
	}
	plats := spec.Platforms
	if len(plats) == 0 {
		plats = []string{"linux/" + runtime.GOARCH}
	}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	rng := rand.NewChaCha8(seed)

	out := &Image{
		Repo: spec.Repo, Tag: spec.Tag,
		Ref:             c.PullRef(spec.Repo, spec.Tag),
		DirectRef:       c.RegistryAddr + "/" + spec.Repo + ":" + spec.Tag,
		ManifestDigests: map[string]string{},
		layers:          map[string][]v1.Layer{},
	}
	imgs := make([]v1.Image, 0, len(plats))
	platforms := make([]*v1.Platform, 0, len(plats))
	for _, ps := range plats {
		plat, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", ps, err)
		}
		var layers []v1.Layer
		if spec.Runnable {
			bb, err := c.busyboxLayer(ctx)
			if err != nil {
				return nil, err
			}
			layers = append(layers, bb)
		}
		if spec.BaseFrom != nil {
			layers = append(layers, spec.BaseFrom.baseLayers(plat.String())...)
		}
		for _, size := range spec.LayerSizes {
			l, err := randomLayer(rng, size)
			if err != nil {
				return nil, err
			}
			if spec.Compression != "" && spec.Compression != "gzip" {
				if l, err = recompress(l, spec.Compression); err != nil {
					return nil, err
				}
			}
			layers = append(layers, l)
		}
		img, err := buildImage(plat, layers, spec.Runnable)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
		platforms = append(platforms, plat)
		out.layers[plat.String()] = layers
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("manifest digest: %w", err)
		}
		out.ManifestDigests[plat.String()] = d.String()
	}

	// Layers describe the platform a pull on this host resolves to.
	pick := 0
	for i, p := range platforms {
		if p.OS == "linux" && p.Architecture == runtime.GOARCH {
			pick = i
			break
		}
	}
	out.Platform = platforms[pick].String()
	cfgName, err := imgs[pick].ConfigName()
	if err != nil {
		return nil, fmt.Errorf("config digest: %w", err)
	}
	out.ConfigDigest = cfgName.String()
	m, err := imgs[pick].Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	for _, l := range m.Layers {
		out.Layers = append(out.Layers, Layer{Digest: l.Digest.String(), Size: l.Size, MediaType: string(l.MediaType)})
	}

	ref, err := name.ParseReference(out.DirectRef, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("ref %s: %w", out.DirectRef, err)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithJobs(4)}
	start := time.Now()
	if len(imgs) == 1 {
		if err := remote.Write(ref, imgs[0], opts...); err != nil {
			return nil, fmt.Errorf("push %s: %w", out.DirectRef, err)
		}
		out.Digest = out.ManifestDigests[out.Platform]
	} else {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for i, img := range imgs {
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        img,
				Descriptor: v1.Descriptor{Platform: platforms[i]},
			})
		}
		if err := remote.WriteIndex(ref, idx, opts...); err != nil {
			return nil, fmt.Errorf("push index %s: %w", out.DirectRef, err)
		}
		d, err := idx.Digest()
		if err != nil {
			return nil, fmt.Errorf("index digest: %w", err)
		}
		out.IndexDigest = d.String()
		out.Digest = out.IndexDigest
	}
	c.log.Info("pushed image", "ref", out.Ref, "digest", out.Digest, "layers", len(out.Layers), "bytes", out.TotalSize(), "took", time.Since(start))
	return out, nil
}

// baseLayers returns the image's layers for plat, or its host-platform layers when it
// was not built for plat.
func (im *Image) baseLayers(plat string) []v1.Layer {
	if l, ok := im.layers[plat]; ok {
		return l
	}
	return im.layers[im.Platform]
}

func buildImage(plat *v1.Platform, layers []v1.Layer, runnable bool) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	// containerd's platform matcher rejects configs without os/architecture.
	cf.OS = plat.OS
	cf.Architecture = plat.Architecture
	cf.Variant = plat.Variant
	cf.Config.Cmd = []string{"/pulltrace/data"}
	if runnable {
		cf.Config.Cmd = []string{"/bin/sleep", "1000000"}
		cf.Config.Env = []string{"PATH=/bin"}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// Gzip framing sizes (RFC 1952): header, trailer, and the extra field's own overhead
// (XLEN plus one subfield header).
const (
	gzHeaderLen    = 10
	gzTrailerLen   = 8
	gzExtraMinimum = 2 + 4
	tarOverhead    = 512 + 1024 // one file header and the end-of-archive blocks
)

// randomLayer makes a gzip'd tar of one file of random bytes whose compressed size is
// exactly target. The data is stored, not compressed (it would not shrink anyway), so
// the size is known in advance; the remainder is padded in the gzip header's extra field,
// which every gzip reader skips.
func randomLayer(rng *rand.ChaCha8, target int64) (*memLayer, error) {
	// Stored deflate blocks cost 5 bytes per 64 KiB; leave a margin for the rest.
	overhead := int64(tarOverhead+gzHeaderLen+gzTrailerLen+gzExtraMinimum) + 5*(target/65535+2) + 600
	fileSize := max(0, (target-overhead)/512*512)

	var tarBuf bytes.Buffer
	tarBuf.Grow(int(fileSize) + tarOverhead)
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{
		Name: "pulltrace/data", Mode: 0o644, Size: fileSize, Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	if _, err := io.CopyN(tw, rng, fileSize); err != nil {
		return nil, fmt.Errorf("layer data: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	tarBytes := tarBuf.Bytes()

	var deflated bytes.Buffer
	deflated.Grow(len(tarBytes) + len(tarBytes)/65535*5 + 64)
	fw, err := flate.NewWriter(&deflated, flate.NoCompression)
	if err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	if _, err := fw.Write(tarBytes); err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	if err := fw.Close(); err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}

	bare := int64(gzHeaderLen + deflated.Len() + gzTrailerLen)
	pad := target - bare // bytes the extra field must add, its own overhead included
	var gz bytes.Buffer
	gz.Grow(int(max(bare, target)))
	flags := byte(0)
	if pad >= gzExtraMinimum {
		flags = 0x04 // FEXTRA
	}
	gz.Write([]byte{0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 255})
	if flags != 0 {
		data := pad - gzExtraMinimum
		if data > 0xffff-4 {
			return nil, fmt.Errorf("layer of %d bytes: padding %d too large", target, pad)
		}
		gz.Write(binary.LittleEndian.AppendUint16(nil, uint16(4+data)))
		gz.Write([]byte{'P', 'T'}) // subfield id
		gz.Write(binary.LittleEndian.AppendUint16(nil, uint16(data)))
		gz.Write(make([]byte, data))
	}
	gz.Write(deflated.Bytes())
	gz.Write(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(tarBytes)))
	gz.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(tarBytes))))

	compressed := gz.Bytes()
	diffID := sha256.Sum256(tarBytes)
	digest := sha256.Sum256(compressed)
	return &memLayer{
		compressed: compressed,
		digest:     v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest[:])},
		diffID:     v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffID[:])},
	}, nil
}

// recompress turns a gzip'd layer into a zstd or an uncompressed one of the same tar.
func recompress(l *memLayer, how string) (*memLayer, error) {
	zr, err := gzip.NewReader(bytes.NewReader(l.compressed))
	if err != nil {
		return nil, fmt.Errorf("recompress: %w", err)
	}
	tarBytes, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("recompress: %w", err)
	}
	out := &memLayer{diffID: l.diffID, tar: tarBytes}
	switch how {
	case "none":
		out.compressed, out.mediaType = tarBytes, types.OCIUncompressedLayer
	case "zstd":
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		out.compressed, out.mediaType = enc.EncodeAll(tarBytes, nil), types.OCILayerZStd
		_ = enc.Close()
	default:
		return nil, fmt.Errorf("layer compression %q: want gzip, zstd or none", how)
	}
	sum := sha256.Sum256(out.compressed)
	out.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	return out, nil
}

// memLayer is a layer held in memory with its digests computed once; ggcr's tarball
// layers would hash and decompress it again. Gzip'd unless mediaType says otherwise, in
// which case tar holds the uncompressed bytes.
type memLayer struct {
	compressed []byte
	digest     v1.Hash
	diffID     v1.Hash
	mediaType  types.MediaType
	tar        []byte
}

func (l *memLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *memLayer) Size() (int64, error)     { return int64(len(l.compressed)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) {
	if l.mediaType != "" {
		return l.mediaType, nil
	}
	return types.OCILayer, nil
}
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	if l.tar != nil {
		return io.NopCloser(bytes.NewReader(l.tar)), nil
	}
	return gzip.NewReader(bytes.NewReader(l.compressed))
}

var _ v1.Layer = (*memLayer)(nil)

// TagImage gives a pushed image another tag on the registry (the same manifest or index,
// so a pull of either tag resolves to the same digests) and returns it under that tag.
func (c *Cluster) TagImage(ctx context.Context, im *Image, tag string) (*Image, error) {
	src, err := name.ParseReference(c.RegistryAddr+"/"+im.Repo+"@"+im.Digest, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", im.Ref, err)
	}
	dst, err := name.NewTag(c.RegistryAddr+"/"+im.Repo+":"+tag, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tag, err)
	}
	desc, err := remote.Get(src, remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", im.Ref, err)
	}
	if err := remote.Tag(dst, desc, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("tag %s as %s: %w", im.Ref, tag, err)
	}
	out := *im
	out.Tag = tag
	out.Ref = c.PullRef(im.Repo, tag)
	out.DirectRef = c.RegistryAddr + "/" + im.Repo + ":" + tag
	return &out, nil
}

// DigestRef is the image's reference by digest through the throttling proxy.
func (im *Image) DigestRef() string {
	return strings.TrimSuffix(im.Ref, ":"+im.Tag) + "@" + im.Digest
}
