package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"pos/api/auth"
	"pos/eventstore"
)

// maxBody is the largest request body accepted (API.md: 413 above 1 MiB).
const maxBody = 1 << 20

// readBody returns the request body, refusing a non-JSON content type (415)
// and a body over maxBody (413). An empty body reads as "{}" only when no
// content type was sent.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
			return nil, errMediaType
		}
		return []byte("{}"), nil
	}
	if !isJSON(r.Header.Get("Content-Type")) {
		return nil, errMediaType
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, invalid("the body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}"), nil
	}
	return body, nil
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func readerOf(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// decode reads r's JSON body into dst strictly: unknown fields (names match
// exactly, see exactNames), a field given twice, trailing data and wrong
// types answer 400 invalid_request naming the field.
func decode(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeJSON(body, dst)
}

// decodeJSON is decode's parser, separate so it can be fuzzed.
func decodeJSON(body []byte, dst any) error {
	// Names first: {"QTY":"x"} is an unknown field, not qty of a wrong type.
	if err := exactNames(body, reflect.TypeOf(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(err)
	}
	if dec.More() {
		return invalid("the body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("the body holds more than one JSON value")
	}
	return nil
}

func jsonProblem(err error) *Problem {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return invalid(fmt.Sprintf("%s must be %s", field, typeErr.Type.Kind()), FieldError{Field: field, Code: "invalid_type"})
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return invalid("the body is not valid JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid("unknown field "+strconv.Quote(field), FieldError{Field: field, Code: "unknown_field"})
	}
	return invalid("the body does not match the expected shape")
}

// pathUUID parses a UUID path parameter; a malformed id is simply not found,
// exactly like a missing one.
func pathUUID(r *http.Request, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(chi.URLParam(r, name))
	if err != nil {
		return uuid.Nil, errNotFound
	}
	return id, nil
}

// ifMatch parses If-Match: "<version>" (quotes optional). Absent: nil.
func ifMatch(r *http.Request) (*uint64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return nil, nil
	}
	h = strings.TrimPrefix(h, "W/")
	v, err := strconv.ParseUint(strings.Trim(h, `"`), 10, 63)
	if err != nil {
		return nil, invalid(`If-Match must be a version, as in ETag: "3"`, FieldError{Field: "If-Match", Code: "invalid"})
	}
	return &v, nil
}

func principalOf(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context())
	return p
}

// commandResult is the part of every command answer API.md fixes.
type commandResult struct {
	ID       string `json:"id"`
	Version  uint64 `json:"version"`
	Position string `json:"position"`
}

// writeCommand answers a command: its body, ETag with the new version and
// X-Position with the position of the last event written.
func writeCommand(w http.ResponseWriter, status int, version uint64, pos eventstore.Position, body any) {
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(version, 10)))
	w.Header().Set("X-Position", pos.String())
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		writeProblem(w, errInternal)
		return
	}
	writeJSONBytes(w, status, b)
}

// writeJSONBytes writes b, already JSON, with status.
func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
