package api_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// derived are the fields Equal leaves out on purpose; every other field must count.
var derived = map[string]bool{"Percent": true, "BytesPerSec": true, "ETASeconds": true, "CompletedAt": true, "UpdatedAt": true}

// changeEachField yields a copy of base with one field set to a different value, for every
// field of api.Pull, including fields added after this test was written.
func changeEachField(t *testing.T, base api.Pull, fn func(name string, c api.Pull)) {
	t.Helper()
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		c := base.Clone()
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64:
			f.SetInt(7)
		case reflect.Float64:
			f.SetFloat(7)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Slice:
			// Same length, a different element: only a real comparison sees it.
			s := reflect.MakeSlice(f.Type(), 1, 1)
			s.Index(0).Field(0).SetString("x")
			f.Set(s)
		case reflect.Struct: // time.Time
			f.Set(reflect.ValueOf(time.Unix(1, 0)))
		default:
			t.Fatalf("field %s of kind %s: teach this test, Equal and Identical about it", rt.Field(i).Name, f.Kind())
		}
		fn(rt.Field(i).Name, c)
	}
}

func basePull() api.Pull {
	return api.Pull{Pods: []api.PodRef{{}}, Layers: []api.Layer{{}}}
}

func TestEqualSeesEveryClientField(t *testing.T) {
	base := basePull()
	changeEachField(t, base, func(name string, c api.Pull) {
		if got := base.Equal(&c); got != derived[name] {
			t.Errorf("changing %s: Equal = %v, want %v", name, got, derived[name])
		}
	})
	same := base.Clone()
	if !base.Equal(&same) {
		t.Error("a deep copy must be Equal")
	}
}

// Identical must notice every field, or the event encoder would splice in a stale pull.
func TestIdenticalSeesEveryField(t *testing.T) {
	base := basePull()
	changeEachField(t, base, func(name string, c api.Pull) {
		if base.Identical(&c) {
			t.Errorf("Identical misses a change of %s", name)
		}
	})
	for name, c := range map[string]api.Pull{
		"shallow copy": base,
		"deep copy":    base.Clone(),
	} {
		if !base.Identical(&c) {
			t.Errorf("a %s must be Identical", name)
		}
	}
	utc := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := base, base
	a.StartedAt, b.StartedAt = utc, utc.In(time.FixedZone("x", 3600))
	if !a.Equal(&b) || a.Identical(&b) {
		t.Error("one instant in two zones: Equal, but not Identical (JSON writes the zone)")
	}
	a, b = base, base
	b.Pods = nil
	a.Pods = []api.PodRef{}
	if !a.Equal(&b) || a.Identical(&b) {
		t.Error("nil and empty pods: Equal, but not Identical (null vs [])")
	}
}

func TestSortNewestFirst(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ps := []api.Pull{{ID: "b", StartedAt: t0}, {ID: "old", StartedAt: t0.Add(-time.Hour)}, {ID: "new", StartedAt: t0.Add(time.Hour)}, {ID: "a", StartedAt: t0}}
	api.SortNewestFirst(ps)
	var got []string
	for _, p := range ps {
		got = append(got, p.ID)
	}
	if want := []string{"new", "a", "b", "old"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}
