package telemetry

import (
	"reflect"

	"go.opentelemetry.io/otel"
)

// The global providers as they are before the application installs an
// SDK: OpenTelemetry's delegating placeholders, which record nothing.
// otel.SetTracerProvider and SetMeterProvider replace them, so comparing
// with them tells at the cost of two loads whether an SDK is installed.
var (
	placeholderTP = otel.GetTracerProvider()
	placeholderMP = otel.GetMeterProvider()
	// placeholdersKnown is false if something installed a provider before
	// this package was initialised: then telemetry on the global providers
	// is never idle.
	placeholdersKnown = isPlaceholder(placeholderTP) && isPlaceholder(placeholderMP)
)

func isPlaceholder(p any) bool {
	t := reflect.TypeOf(p)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

// noSDK reports whether both global providers are still the placeholders.
func noSDK() bool {
	return placeholdersKnown && otel.GetTracerProvider() == placeholderTP && otel.GetMeterProvider() == placeholderMP
}

// Active reports whether t records anything now. A Telemetry on the global
// providers (no WithMeterProvider, WithTracerProvider or WithAccessLog) is
// idle until the application installs an OpenTelemetry SDK with
// otel.SetTracerProvider or otel.SetMeterProvider: its interceptors,
// handlers and transports then pass calls through untouched, so that
// telemetry on by default costs next to nothing until it has somewhere to
// go. A nil Telemetry is never active.
func (t *Telemetry) Active() bool {
	return t != nil && !(t.onGlobals && noSDK())
}
